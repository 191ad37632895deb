// Package redfishtest is a small in-process Redfish service (one
// ComputerSystem, session authentication) for tests of code that drives BMCs
// through bmclib's gofish provider. It implements the endpoints that
// provider calls for power state, power actions, one-time boot overrides and
// sessions, and records what it was asked to do.
package redfishtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Paths served.
const (
	RootPath     = "/redfish/v1/"
	SessionsPath = "/redfish/v1/SessionService/Sessions"
	SystemsPath  = "/redfish/v1/Systems"
	SystemPath   = "/redfish/v1/Systems/1"
	ResetPath    = "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
)

// Options configure a Server. The zero value serves a system that is off.
type Options struct {
	// User and Password are the only accepted credentials.
	User, Password string
	// PowerState is the initial PowerState ("On" or "Off"; default "Off").
	PowerState string
	// Delay is added to every authenticated request, to widen the window
	// in which overlapping sessions would be seen.
	Delay time.Duration
	// EchoCredentials makes a failed login answer with a body that repeats
	// the user name and password it was sent, like a badly behaved BMC (to
	// test that clients scrub error text).
	EchoCredentials bool
	// Gauge, if set, is incremented while a session is open and decremented
	// when it is deleted; share one between servers to observe global
	// concurrency.
	Gauge *Gauge
}

// Gauge counts open sessions (possibly across servers) and remembers the
// maximum. The zero value is ready to use.
type Gauge struct {
	mu       sync.Mutex
	cur, max int
}

func (g *Gauge) add(d int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cur += d
	g.max = max(g.max, g.cur)
}

// Max returns the highest value the gauge reached.
func (g *Gauge) Max() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.max
}

// Current returns the current value.
func (g *Gauge) Current() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cur
}

// State is a snapshot of what the server recorded.
type State struct {
	// PowerState is "On" or "Off".
	PowerState string
	// BootTarget, BootEnabled and BootMode are the current
	// BootSourceOverride{Target,Enabled,Mode}.
	BootTarget, BootEnabled, BootMode string
	// Resets lists the ResetType of every ComputerSystem.Reset, in order.
	Resets []string
	// BootPatches lists the Boot object of every PATCH, in order.
	BootPatches []map[string]any
	// SessionsCreated and SessionsDeleted count logins and logouts;
	// FailedLogins counts refused logins.
	SessionsCreated, SessionsDeleted, FailedLogins int
	// OpenSessions is the number of sessions not deleted yet;
	// MaxOpenSessions the most that were open at once.
	OpenSessions, MaxOpenSessions int
	// Requests lists "METHOD PATH" of every request, in order.
	Requests []string
}

// Server is a Redfish service on an httptest TLS server.
type Server struct {
	*httptest.Server
	opts Options

	mu       sync.Mutex
	st       State
	sessions map[string]string // token -> session path
	failNext int
	failCode int
}

// NewTLSServer starts a Redfish service with a self-signed certificate
// (httptest.NewTLSServer). Close it when done.
func NewTLSServer(opts Options) *Server {
	s := &Server{opts: opts, sessions: make(map[string]string)}
	s.st.PowerState = "Off"
	if opts.PowerState != "" {
		s.st.PowerState = opts.PowerState
	}
	s.st.BootTarget, s.st.BootEnabled, s.st.BootMode = "None", "Disabled", "UEFI"
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	// Clients that refuse the self-signed certificate are expected.
	s.Server.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Server.StartTLS()
	return s
}

// State returns a copy of the recorded state.
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Resets = append([]string(nil), s.st.Resets...)
	st.BootPatches = append([]map[string]any(nil), s.st.BootPatches...)
	st.Requests = append([]string(nil), s.st.Requests...)
	return st
}

// SetPowerState sets the system's PowerState ("On" or "Off").
func (s *Server) SetPowerState(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.PowerState = p
}

// FailNext makes the next n authenticated requests (logouts excepted)
// answer with HTTP status code (e.g. 503).
func (s *Server) FailNext(n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failCode = n, code
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	s.mu.Lock()
	s.st.Requests = append(s.st.Requests, r.Method+" "+path)
	s.mu.Unlock()

	switch {
	case path == "/redfish/v1" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id":      RootPath,
			"@odata.type":    "#ServiceRoot.v1_5_0.ServiceRoot",
			"Id":             "RootService",
			"Name":           "kiln test Redfish service",
			"RedfishVersion": "1.6.0",
			"Systems":        map[string]string{"@odata.id": SystemsPath},
			"SessionService": map[string]string{"@odata.id": "/redfish/v1/SessionService"},
			"Links":          map[string]any{"Sessions": map[string]string{"@odata.id": SessionsPath}},
		})
		return
	case path == SessionsPath && r.Method == http.MethodPost:
		s.login(w, r)
		return
	}

	token := r.Header.Get("X-Auth-Token")
	s.mu.Lock()
	sessPath, ok := s.sessions[token]
	fail := 0
	isLogout := r.Method == http.MethodDelete && strings.HasPrefix(path, SessionsPath+"/")
	if ok && s.failNext > 0 && !isLogout {
		s.failNext--
		fail = s.failCode
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusUnauthorized, "Base.1.0.NoValidSession", "no valid session")
		return
	}
	if s.opts.Delay > 0 {
		time.Sleep(s.opts.Delay)
	}
	if fail != 0 {
		writeError(w, fail, "Base.1.0.ServiceTemporarilyUnavailable", "injected failure")
		return
	}

	switch {
	case strings.HasPrefix(path, SessionsPath+"/") && r.Method == http.MethodDelete:
		if path != sessPath {
			writeError(w, http.StatusNotFound, "Base.1.0.ResourceMissingAtURI", "no such session")
			return
		}
		s.mu.Lock()
		delete(s.sessions, token)
		s.st.SessionsDeleted++
		s.st.OpenSessions--
		s.mu.Unlock()
		if s.opts.Gauge != nil {
			s.opts.Gauge.add(-1)
		}
		w.WriteHeader(http.StatusNoContent)
	case path == SystemsPath && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id":           SystemsPath,
			"Name":                "Computer System Collection",
			"Members@odata.count": 1,
			"Members":             []map[string]string{{"@odata.id": SystemPath}},
		})
	case path == SystemPath && r.Method == http.MethodGet:
		s.mu.Lock()
		body := map[string]any{
			"@odata.id":   SystemPath,
			"@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
			"Id":          "1",
			"Name":        "System",
			"PowerState":  s.st.PowerState,
			"Boot": map[string]any{
				"BootSourceOverrideTarget":  s.st.BootTarget,
				"BootSourceOverrideEnabled": s.st.BootEnabled,
				"BootSourceOverrideMode":    s.st.BootMode,
			},
			"Actions": map[string]any{
				"#ComputerSystem.Reset": map[string]any{
					"target":                            ResetPath,
					"ResetType@Redfish.AllowableValues": []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"},
				},
			},
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, body)
	case path == SystemPath && r.Method == http.MethodPatch:
		var req struct{ Boot map[string]any }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Boot == nil {
			writeError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", "want {\"Boot\": {...}}")
			return
		}
		s.mu.Lock()
		s.st.BootPatches = append(s.st.BootPatches, req.Boot)
		if v, ok := req.Boot["BootSourceOverrideTarget"].(string); ok {
			s.st.BootTarget = v
		}
		if v, ok := req.Boot["BootSourceOverrideEnabled"].(string); ok {
			s.st.BootEnabled = v
		}
		if v, ok := req.Boot["BootSourceOverrideMode"].(string); ok {
			s.st.BootMode = v
		}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case path == ResetPath && r.Method == http.MethodPost:
		var req struct{ ResetType string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", "bad body")
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		switch req.ResetType {
		case "On":
			s.st.PowerState = "On"
		case "ForceOff", "GracefulShutdown":
			s.st.PowerState = "Off"
		case "ForceRestart", "PowerCycle":
			if s.st.PowerState != "On" {
				writeError(w, http.StatusConflict, "Base.1.0.ActionNotSupported", "system is off")
				return
			}
		default:
			writeError(w, http.StatusBadRequest, "Base.1.0.ActionParameterNotSupported", "unknown ResetType")
			return
		}
		s.st.Resets = append(s.st.Resets, req.ResetType)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeError(w, http.StatusNotFound, "Base.1.0.ResourceMissingAtURI", "not found")
	}
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req struct{ UserName, Password string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.0.MalformedJSON", "bad body")
		return
	}
	if req.UserName != s.opts.User || req.Password != s.opts.Password {
		s.mu.Lock()
		s.st.FailedLogins++
		s.mu.Unlock()
		msg := "invalid credentials"
		if s.opts.EchoCredentials {
			msg = fmt.Sprintf("invalid credentials user=%s password=%s", req.UserName, req.Password)
		}
		writeError(w, http.StatusUnauthorized, "Base.1.0.InsufficientPrivilege", msg)
		return
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	s.mu.Lock()
	id := fmt.Sprintf("%d", s.st.SessionsCreated+1)
	sessPath := SessionsPath + "/" + id
	s.sessions[token] = sessPath
	s.st.SessionsCreated++
	s.st.OpenSessions++
	s.st.MaxOpenSessions = max(s.st.MaxOpenSessions, s.st.OpenSessions)
	s.mu.Unlock()
	if s.opts.Gauge != nil {
		s.opts.Gauge.add(1)
	}
	w.Header().Set("X-Auth-Token", token)
	w.Header().Set("Location", sessPath)
	writeJSON(w, http.StatusCreated, map[string]any{"@odata.id": sessPath, "Id": id, "UserName": req.UserName})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, id, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{
		"code":    id,
		"message": msg,
	}})
}
