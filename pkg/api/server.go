package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/imagestore"
	"github.com/immutableinfra/kiln/pkg/store"
)

// Store is the state the API reads and changes (implemented by *store.Store).
type Store interface {
	CreateHostSecret(ctx context.Context, h fleet.Host, sealed []byte) (fleet.Host, error)
	GetHost(ctx context.Context, name string) (fleet.Host, error)
	ListHosts(ctx context.Context, sel fleet.Selector) ([]fleet.Host, error)
	UpdateHost(ctx context.Context, name string, fn func(*fleet.Host) error) (fleet.Host, error)
	UpdateHostSecret(ctx context.Context, name string, fn func(*fleet.Host) error, sealed []byte) (fleet.Host, error)
	DeleteHost(ctx context.Context, name string) error
	AssignHosts(ctx context.Context, hosts []string, ref, actor, reason string) ([]fleet.Host, []string, error)
	History(ctx context.Context, host string) ([]fleet.HistoryEntry, error)
	Reports(ctx context.Context, host string, limit int) ([]fleet.BootReport, error)
	Image(ctx context.Context, ref string) (fleet.Image, error)
	ListImages(ctx context.Context) ([]fleet.Image, error)
	AppendEvents(ctx context.Context, es []fleet.Event) error
	Events(ctx context.Context, f store.EventFilter) ([]fleet.Event, error)
	Backup(w io.Writer) (int64, error)
}

// Images imports and removes image versions (implemented by *imagestore.Store).
type Images interface {
	Import(ctx context.Context, req imagestore.ImportRequest) (fleet.Image, bool, error)
	Remove(ctx context.Context, ref string) (int64, error)
	GC(ctx context.Context, keep int, dryRun bool) (imagestore.GCResult, error)
}

// Sealer encrypts BMC passwords before they are stored.
type Sealer interface {
	Seal(label string, plaintext []byte) ([]byte, error)
}

// BMCChecker validates a BMC URL (pkg/bmc.ParseURL); nil accepts any URL.
type BMCChecker func(url string) error

// Power drives a host's power through its BMC; nil disables the power
// endpoints (503).
type Power interface {
	PowerState(ctx context.Context, host string) (string, error)
	SetPower(ctx context.Context, host, action string) error
}

// Config wires the server. Store, Images, Sealer and Token are required.
type Config struct {
	Store    Store
	Images   Images
	Sealer   Sealer
	CheckBMC BMCChecker
	Power    Power
	Rollouts Rollouts
	// Token is the admin bearer token every /api/v1 call must carry.
	Token string
	// MaxBodyBytes bounds JSON request bodies (default 1 MiB); imports are
	// streamed and not bounded by it.
	MaxBodyBytes int64
	Logger       *slog.Logger
}

// Server is the /api/v1 handler.
type Server struct {
	cfg Config
	mux *http.ServeMux
	log *slog.Logger
}

// NewServer returns the API handler. It serves /api/v1/... only; kilnd
// mounts it beside /healthz, /metrics and the boot endpoints.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Images == nil || cfg.Sealer == nil {
		return nil, errors.New("api: Store, Images and Sealer are required")
	}
	if cfg.Token == "" {
		return nil, errors.New("api: Token is required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger}
	routes := map[string]http.HandlerFunc{
		"POST /api/v1/hosts":                  s.createHost,
		"GET /api/v1/hosts":                   s.listHosts,
		"GET /api/v1/hosts/{name}":            s.getHost,
		"PATCH /api/v1/hosts/{name}":          s.updateHost,
		"DELETE /api/v1/hosts/{name}":         s.deleteHost,
		"POST /api/v1/hosts/{name}/labels":    s.labelHost,
		"POST /api/v1/hosts/{name}/boot-mode": s.bootMode,
		"GET /api/v1/hosts/{name}/history":    s.history,
		"GET /api/v1/hosts/{name}/reports":    s.reports,
		"POST /api/v1/hosts/{name}/revert":    s.revert,
		"POST /api/v1/hosts/{name}/power":     s.power,
		"POST /api/v1/assign":                 s.assign,
		"POST /api/v1/images":                 s.importImage,
		"GET /api/v1/images":                  s.listImages,
		"GET /api/v1/images/{ref}":            s.getImage,
		"DELETE /api/v1/images/{ref}":         s.removeImage,
		"POST /api/v1/images/gc":              s.gc,
		"GET /api/v1/events":                  s.events,
		"GET /api/v1/backup":                  s.backup,
		"POST /api/v1/rollouts":               s.startRollout,
		"GET /api/v1/rollouts":                s.listRollouts,
		"GET /api/v1/rollouts/{id}":           s.getRollout,
		"POST /api/v1/rollouts/{id}/{action}": s.rolloutAction,
		"POST /api/v1/refresh":                s.refresh,
	}
	for pattern, h := range routes {
		s.mux.Handle(pattern, h)
	}
	return s, nil
}

// ServeHTTP authenticates the request and dispatches it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		writeError(w, http.StatusUnauthorized, "missing bearer token (set KILN_TOKEN)")
		return
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) != 1 {
		writeError(w, http.StatusForbidden, "invalid token")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func actor(r *http.Request) string {
	if a := r.Header.Get("X-Kiln-Actor"); a != "" && len(a) < 128 {
		return a
	}
	return "api"
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

// fail maps an error to its status: the package sentinels decide.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, reason := http.StatusInternalServerError, ""
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, fleet.ErrExists):
		code, reason = http.StatusConflict, ReasonExists
	case errors.Is(err, fleet.ErrConflict):
		code, reason = http.StatusConflict, ReasonConflict
	case errors.Is(err, fleet.ErrInUse):
		code, reason = http.StatusConflict, ReasonInUse
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, imagestore.ErrNotSquashfs), errors.Is(err, imagestore.ErrNoKernel), errors.Is(err, imagestore.ErrNoInit):
		code = http.StatusBadRequest
	case errors.Is(err, imagestore.ErrDiskFull):
		code = http.StatusInsufficientStorage
	case errors.Is(err, errUnavailable):
		code = http.StatusServiceUnavailable
	}
	if code == http.StatusInternalServerError {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, code, Error{Error: err.Error(), Reason: reason})
}

var errUnavailable = errors.New("not available on this kilnd")

func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) createHost(w http.ResponseWriter, r *http.Request) {
	var req HostRequest
	if !s.decode(w, r, &req) {
		return
	}
	h := fleet.Host{Name: req.Name, MACs: req.MACs, Labels: req.Labels, NetbootDisabled: req.NetbootDisabled, BootModeOverride: req.BootMode}
	if h.Labels == nil {
		h.Labels = map[string]string{}
	}
	var err error
	if h.IP, err = parseHostIP(req.IP); err != nil {
		s.fail(w, r, err)
		return
	}
	if h.Gateway, err = parseGateway(req.Gateway); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.BMCURL != "" {
		if err := s.checkBMC(req.BMCURL); err != nil {
			s.fail(w, r, err)
			return
		}
		h.BMC = &fleet.BMC{URL: req.BMCURL, InsecureTLS: req.BMCInsecureTLS, HasPassword: req.BMCPassword != ""}
	} else if req.BMCPassword != "" {
		s.fail(w, r, errPasswordWithoutBMC)
		return
	}
	var sealed []byte
	if req.BMCPassword != "" {
		if sealed, err = s.cfg.Sealer.Seal(h.Name, []byte(req.BMCPassword)); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	created, err := s.cfg.Store.CreateHostSecret(r.Context(), h, sealed)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.event(r, fleet.Event{Kind: "host.add", Host: h.Name, Message: "host added"})
	writeJSON(w, http.StatusCreated, created)
}

var errPasswordWithoutBMC = fmt.Errorf("%w: a bmc password was given without a bmc url", fleet.ErrInvalid)

// parseHostIP parses a fixed address; "" is none.
func parseHostIP(v string) (netip.Prefix, error) {
	if v == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return p, fmt.Errorf("%w: ip %q: want ADDR/PREFIX such as 198.18.0.10/15", fleet.ErrInvalid, v)
	}
	return p, nil
}

// parseGateway parses a gateway address; "" is none.
func parseGateway(v string) (netip.Addr, error) {
	if v == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return a, fmt.Errorf("%w: gateway %q is not an IP address", fleet.ErrInvalid, v)
	}
	return a, nil
}

func (s *Server) checkBMC(url string) error {
	if s.cfg.CheckBMC == nil {
		return nil
	}
	if err := s.cfg.CheckBMC(url); err != nil {
		return fmt.Errorf("%w: bmc: %v", fleet.ErrInvalid, err)
	}
	return nil
}

// updateHost changes the fields a HostUpdate sets, and the sealed BMC
// password with them in one transaction.
func (s *Server) updateHost(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req HostUpdate
	if !s.decode(w, r, &req) {
		return
	}
	var ip netip.Prefix
	var gw netip.Addr
	var sealed []byte
	var err error
	if req.IP != nil {
		ip, err = parseHostIP(*req.IP)
	}
	if err == nil && req.Gateway != nil {
		gw, err = parseGateway(*req.Gateway)
	}
	if err == nil && req.BMCURL != nil && *req.BMCURL != "" {
		err = s.checkBMC(*req.BMCURL)
	}
	if err == nil && req.BMCPassword != nil && *req.BMCPassword != "" {
		sealed, err = s.cfg.Sealer.Seal(name, []byte(*req.BMCPassword))
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var changed []string
	apply := func(h *fleet.Host) error {
		changed = changed[:0]
		if req.MACs != nil {
			h.MACs, changed = req.MACs, append(changed, "macs")
		}
		if req.IP != nil {
			h.IP, changed = ip, append(changed, "ip")
			if !ip.IsValid() {
				h.Gateway = netip.Addr{}
			}
		}
		if req.Gateway != nil {
			h.Gateway, changed = gw, append(changed, "gateway")
		}
		if req.BMCURL != nil {
			switch {
			case *req.BMCURL == "":
				h.BMC = nil
			case h.BMC == nil:
				h.BMC = &fleet.BMC{URL: *req.BMCURL}
			default:
				h.BMC.URL = *req.BMCURL
			}
			changed = append(changed, "bmc")
		}
		if req.BMCInsecureTLS != nil {
			if h.BMC == nil {
				return fmt.Errorf("%w: bmc_insecure_tls for host %s, which has no bmc", fleet.ErrInvalid, name)
			}
			h.BMC.InsecureTLS, changed = *req.BMCInsecureTLS, append(changed, "bmc_insecure_tls")
		}
		if req.BMCPassword != nil {
			if h.BMC == nil {
				return errPasswordWithoutBMC
			}
			h.BMC.HasPassword, changed = sealed != nil, append(changed, "bmc_password")
		}
		if req.NetbootDisabled != nil {
			h.NetbootDisabled, changed = *req.NetbootDisabled, append(changed, "netboot")
		}
		if len(changed) == 0 {
			return fmt.Errorf("%w: nothing to change", fleet.ErrInvalid)
		}
		return nil
	}
	var h fleet.Host
	if req.BMCPassword != nil || (req.BMCURL != nil && *req.BMCURL == "") {
		// A removed BMC takes its password along (sealed is nil then).
		h, err = s.cfg.Store.UpdateHostSecret(r.Context(), name, apply, sealed)
	} else {
		h, err = s.cfg.Store.UpdateHost(r.Context(), name, apply)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.event(r, fleet.Event{Kind: "host.update", Host: name, Message: "changed " + strings.Join(changed, ", ")})
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) event(r *http.Request, es ...fleet.Event) {
	if len(es) == 0 {
		return
	}
	for i := range es {
		es[i].Actor = actor(r)
	}
	if err := s.cfg.Store.AppendEvents(r.Context(), es); err != nil {
		s.log.Warn("events not recorded", "kind", es[0].Kind, "err", err)
	}
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	sel, err := fleet.ParseSelector(r.URL.Query().Get("selector"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	hosts, err := s.cfg.Store.ListHosts(r.Context(), sel)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if hosts == nil {
		hosts = []fleet.Host{}
	}
	writeJSON(w, http.StatusOK, hosts)
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) {
	h, err := s.cfg.Store.GetHost(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.cfg.Store.DeleteHost(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	s.event(r, fleet.Event{Kind: "host.rm", Host: name, Message: "host removed"})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) labelHost(w http.ResponseWriter, r *http.Request) {
	var req LabelRequest
	if !s.decode(w, r, &req) {
		return
	}
	h, err := s.cfg.Store.UpdateHost(r.Context(), r.PathValue("name"), func(h *fleet.Host) error {
		labels, err := fleet.ApplyLabelChanges(h.Labels, req.Changes)
		h.Labels = labels
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) bootMode(w http.ResponseWriter, r *http.Request) {
	var req BootModeRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.Mode == "auto" {
		req.Mode = ""
	}
	h, err := s.cfg.Store.UpdateHost(r.Context(), r.PathValue("name"), func(h *fleet.Host) error {
		h.BootModeOverride = req.Mode
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	hist, err := s.cfg.Store.History(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, hist)
}

func (s *Server) reports(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	reps, err := s.cfg.Store.Reports(r.Context(), r.PathValue("name"), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, reps)
}

// resolveHosts turns an explicit host list or a selector into host names.
func (s *Server) resolveHosts(ctx context.Context, hosts []string, selector string) ([]string, error) {
	if len(hosts) > 0 && selector != "" {
		return nil, fmt.Errorf("%w: give hosts or a selector, not both", fleet.ErrInvalid)
	}
	if len(hosts) > 0 {
		return hosts, nil
	}
	if selector == "" {
		return nil, fmt.Errorf("%w: no hosts and no selector given", fleet.ErrInvalid)
	}
	sel, err := fleet.ParseSelector(selector)
	if err != nil {
		return nil, err
	}
	hs, err := s.cfg.Store.ListHosts(ctx, sel)
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, fmt.Errorf("selector %q matches no host: %w", selector, fleet.ErrNotFound)
	}
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = h.Name
	}
	return names, nil
}

func (s *Server) assign(w http.ResponseWriter, r *http.Request) {
	var req AssignRequest
	if !s.decode(w, r, &req) {
		return
	}
	names, err := s.resolveHosts(r.Context(), req.Hosts, req.Selector)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	hosts, changed, err := s.cfg.Store.AssignHosts(r.Context(), names, req.Ref, actor(r), req.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	evs := make([]fleet.Event, len(changed))
	for i, name := range changed {
		evs[i] = fleet.Event{Kind: "host.assign", Host: name, Message: "assigned " + hosts[0].DesiredImage}
	}
	s.event(r, evs...)
	writeJSON(w, http.StatusOK, hosts)
}

func (s *Server) revert(w http.ResponseWriter, r *http.Request) {
	var req RevertRequest
	if !s.decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	to, err := s.revertTarget(r.Context(), name, req.To)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reason := req.Reason
	if reason == "" {
		reason = "revert"
	}
	hosts, changed, err := s.cfg.Store.AssignHosts(r.Context(), []string{name}, to, actor(r), reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(changed) > 0 {
		s.event(r, fleet.Event{Kind: "host.revert", Host: name, Message: "reverted to " + hosts[0].DesiredImage})
	}
	writeJSON(w, http.StatusOK, hosts[0])
}

// revertTarget is to, or the previous distinct image of the host's history.
func (s *Server) revertTarget(ctx context.Context, host, to string) (string, error) {
	if to != "" {
		return to, nil
	}
	h, err := s.cfg.Store.GetHost(ctx, host)
	if err != nil {
		return "", err
	}
	hist, err := s.cfg.Store.History(ctx, host)
	if err != nil {
		return "", err
	}
	prev, ok := fleet.PreviousImage(hist, h.DesiredImage)
	if !ok {
		return "", fmt.Errorf("host %s has no previous image in its history: %w", host, fleet.ErrNotFound)
	}
	return prev, nil
}

func (s *Server) power(w http.ResponseWriter, r *http.Request) {
	var req PowerRequest
	if !s.decode(w, r, &req) {
		return
	}
	if s.cfg.Power == nil {
		s.fail(w, r, fmt.Errorf("power control: %w", errUnavailable))
		return
	}
	name := r.PathValue("name")
	switch req.Action {
	case "status":
	case "on", "off", "cycle":
		if err := s.cfg.Power.SetPower(r.Context(), name, req.Action); err != nil {
			s.fail(w, r, err)
			return
		}
		s.event(r, fleet.Event{Kind: "host.power", Host: name, Message: "power " + req.Action})
	default:
		s.fail(w, r, fmt.Errorf("%w: power action %q (want status, on, off or cycle)", fleet.ErrInvalid, req.Action))
		return
	}
	state, err := s.cfg.Power.PowerState(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PowerResponse{Host: name, State: state})
}

// importMeta is the first part of an import upload.
type importMeta struct {
	Ref     string `json:"ref"`
	Arch    string `json:"arch"`
	Cmdline string `json:"cmdline"`
	Kernel  bool   `json:"kernel"`
	Initrd  bool   `json:"initrd"`
}

// importImage streams a multipart upload: a "meta" JSON part, then the
// "rootfs" file, then "kernel" and "initrd" when meta says they follow. No
// file is buffered in memory.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "import: want a multipart upload: "+err.Error())
		return
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "meta" {
		writeError(w, http.StatusBadRequest, "import: the first part must be \"meta\"")
		return
	}
	var meta importMeta
	if err := json.NewDecoder(io.LimitReader(part, 64<<10)).Decode(&meta); err != nil {
		writeError(w, http.StatusBadRequest, "import: bad meta part: "+err.Error())
		return
	}
	req := imagestore.ImportRequest{Ref: meta.Ref, Arch: meta.Arch, Cmdline: meta.Cmdline,
		Rootfs: &lazyPart{mr: mr, name: "rootfs"}}
	if meta.Kernel {
		req.Kernel = &lazyPart{mr: mr, name: "kernel"}
	}
	if meta.Initrd {
		req.Initrd = &lazyPart{mr: mr, name: "initrd"}
	}
	start := time.Now()
	img, created, err := s.cfg.Images.Import(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if created {
		s.event(r, fleet.Event{Kind: "image.import", Message: fmt.Sprintf("imported %s (rootfs %s, %d bytes) in %s", img.Ref, img.Rootfs.Digest, img.Rootfs.Size, time.Since(start).Round(time.Millisecond))})
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, ImportResponse{Image: img, Created: created})
}

// lazyPart reads the next multipart part, which must be called name.
type lazyPart struct {
	mr   *multipart.Reader
	name string
	p    *multipart.Part
}

func (l *lazyPart) Read(b []byte) (int, error) {
	if l.p == nil {
		p, err := l.mr.NextPart()
		if err != nil {
			return 0, fmt.Errorf("%w: upload part %q missing: %v", fleet.ErrInvalid, l.name, err)
		}
		if p.FormName() != l.name {
			return 0, fmt.Errorf("%w: upload part %q where %q was expected", fleet.ErrInvalid, p.FormName(), l.name)
		}
		l.p = p
	}
	return l.p.Read(b)
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	imgs, err := s.cfg.Store.ListImages(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, imgs)
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) {
	img, err := s.cfg.Store.Image(r.Context(), r.PathValue("ref"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, img)
}

func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	if _, err := fleet.ParseRef(ref); err != nil || !strings.Contains(ref, "@") || strings.HasSuffix(ref, "@"+fleet.Latest) {
		s.fail(w, r, fmt.Errorf("%w: image rm needs an explicit NAME@VERSION, got %q", fleet.ErrInvalid, ref))
		return
	}
	n, err := s.cfg.Images.Remove(r.Context(), ref)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.event(r, fleet.Event{Kind: "image.rm", Message: fmt.Sprintf("removed %s, %d bytes freed", ref, n)})
	writeJSON(w, http.StatusOK, RemoveResponse{Ref: ref, BytesFreed: n})
}

func (s *Server) gc(w http.ResponseWriter, r *http.Request) {
	var req GCRequest
	if !s.decode(w, r, &req) {
		return
	}
	res, err := s.cfg.Images.GC(r.Context(), req.Keep, req.DryRun)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !req.DryRun {
		s.event(r, fleet.Event{Kind: "image.gc", Message: fmt.Sprintf("gc removed %d images and %d orphan blobs, %d bytes freed", len(res.Images), len(res.OrphanBlobs), res.BytesFreed)})
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	evs, err := s.cfg.Store.Events(r.Context(), store.EventFilter{Host: q.Get("host"), Rollout: q.Get("rollout"), Limit: limit})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, evs)
}

func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="kiln.db"`)
	if _, err := s.cfg.Store.Backup(w); err != nil {
		s.log.Error("backup failed", "err", err)
	}
}
