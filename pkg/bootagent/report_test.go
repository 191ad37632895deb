package bootagent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// reportServer records reports and answers with the configured statuses.
type reportServer struct {
	mu      sync.Mutex
	answers []int // answer i for request i; 204 once exhausted
	got     []Report
	auth    []string
	ctype   []string
}

func (s *reportServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/boot/report" {
		http.Error(w, "wrong endpoint "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var rep Report
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, rep)
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	s.ctype = append(s.ctype, r.Header.Get("Content-Type"))
	status := http.StatusNoContent
	if i := len(s.got) - 1; i < len(s.answers) {
		status = s.answers[i]
	}
	w.WriteHeader(status)
}

func TestReporterSend(t *testing.T) {
	tests := []struct {
		name     string
		answers  []int
		report   Report
		wantErr  error
		wantReqs int
	}{
		{name: "recorded", report: Report{Phase: fleet.PhaseFetched, Digest: testDigest, Message: "412 MiB in 3.1s"}, wantReqs: 1},
		{name: "5xx retried", answers: []int{500, 503}, report: Report{Phase: fleet.PhaseNetwork, Digest: testDigest}, wantReqs: 3},
		{name: "5xx exhausted", answers: []int{500, 500, 500}, report: Report{Phase: fleet.PhaseNetwork}, wantErr: ErrReportUnsent, wantReqs: 3},
		{name: "403 not retried", answers: []int{403}, report: Report{Phase: fleet.PhaseBooted}, wantErr: ErrReportRejected, wantReqs: 1},
		{name: "400 not retried", answers: []int{400}, report: Report{Phase: fleet.PhaseFailed, Message: "x"}, wantErr: ErrReportRejected, wantReqs: 1},
		{name: "unknown phase never sent", report: Report{Phase: "rebooting"}, wantErr: ErrUnknownPhase, wantReqs: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &reportServer{answers: tt.answers}
			ts := httptest.NewServer(srv)
			defer ts.Close()
			rp := &Reporter{Server: ts.URL + "/", Token: "s3cret-token", Backoff: time.Millisecond}
			err := rp.Send(context.Background(), tt.report)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret-token") {
				t.Errorf("error leaks the token: %v", err)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if len(srv.got) != tt.wantReqs {
				t.Fatalf("server got %d reports, want %d", len(srv.got), tt.wantReqs)
			}
			for i := range srv.got {
				if srv.got[i] != tt.report {
					t.Errorf("report %d = %+v, want %+v", i, srv.got[i], tt.report)
				}
				if srv.auth[i] != "Bearer s3cret-token" || srv.ctype[i] != "application/json" {
					t.Errorf("headers: Authorization %q, Content-Type %q", srv.auth[i], srv.ctype[i])
				}
			}
		})
	}
}

func TestReporterUnreachableIsBounded(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close() // nothing listens there any more
	rp := &Reporter{Server: url, Token: "t", Attempts: 2, Backoff: time.Millisecond, Timeout: time.Second}
	err := rp.Send(context.Background(), Report{Phase: fleet.PhaseFailed})
	if !errors.Is(err, ErrReportUnsent) {
		t.Fatalf("err = %v, want ErrReportUnsent", err)
	}
}

func TestBootInfoRoundTrip(t *testing.T) {
	c, err := ParseCmdline(baseCmdline)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "run/kiln/boot.json")
	if err := WriteBootInfo(p, BootInfoFor(c)); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("boot.json mode %v, err %v; want 0600 (it holds the token)", st.Mode(), err)
	}
	raw, _ := os.ReadFile(p)
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"host": "r12-n07", "image": "debian-12@2026.11.26", "digest": testDigest,
		"server": "http://198.18.0.1:8080", "token": "tok-EN_123=", "mac": "52:54:00:12:34:56",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("boot.json %s = %q, want %q", k, m[k], v)
		}
	}
	if len(m) != len(want) {
		t.Errorf("boot.json has keys %v", m)
	}
	b, err := ReadBootInfo(p)
	if err != nil || b != BootInfoFor(c) {
		t.Fatalf("ReadBootInfo = %+v, %v", b, err)
	}
	if err := os.WriteFile(p, []byte(`{"server":"http://x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBootInfo(p); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("boot.json without token: err = %v", err)
	}
}
