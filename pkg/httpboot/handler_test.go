package httpboot

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// newTestHandler builds a Handler on a fresh registry.
func newTestHandler(t testing.TB, cfg Config, hosts Hosts, blobs Blobs, fw fs.FS) (*Handler, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := New(cfg, hosts, blobs, fw, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

// counterValue returns the value of the counter name with exactly labels, or
// 0 when it has not been created.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return counter(m)
		}
	}
	return 0
}

func counter(m *dto.Metric) float64 { return m.GetCounter().GetValue() }

func TestConfigValidation(t *testing.T) {
	u := func(s string) *url.URL { x, _ := url.Parse(s); return x }
	tests := []struct {
		name  string
		cfg   Config
		field string // "" = valid
	}{
		{name: "zero value", cfg: Config{}},
		{name: "full", cfg: Config{ServerURL: u("http://198.18.0.1:8080"), Retries: 5, StateMount: "/var/state", ExtraCmdline: "console=ttyS0", Debug: true, MaxReportBytes: 1024}},
		{name: "https and trailing slash", cfg: Config{ServerURL: u("https://kiln.example:8443/")}},
		{name: "ftp scheme", cfg: Config{ServerURL: u("ftp://198.18.0.1")}, field: "ServerURL"},
		{name: "no host", cfg: Config{ServerURL: u("http:///x")}, field: "ServerURL"},
		{name: "path", cfg: Config{ServerURL: u("http://198.18.0.1/kiln")}, field: "ServerURL"},
		{name: "user info", cfg: Config{ServerURL: u("http://a:secretpw@198.18.0.1")}, field: "ServerURL"},
		{name: "negative retries", cfg: Config{Retries: -1}, field: "Retries"},
		{name: "too many retries", cfg: Config{Retries: MaxRetries + 1}, field: "Retries"},
		{name: "relative state", cfg: Config{StateMount: "var/state"}, field: "StateMount"},
		{name: "state with space", cfg: Config{StateMount: "/var/my state"}, field: "StateMount"},
		{name: "unsafe extra", cfg: Config{ExtraCmdline: "a || b"}, field: "ExtraCmdline"},
		{name: "negative reboot delay", cfg: Config{RebootDelay: -time.Second}, field: "RebootDelay"},
		{name: "negative report bytes", cfg: Config{MaxReportBytes: -1}, field: "MaxReportBytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, newFakeHosts(nil, nil), dirBlobs{t.TempDir()}, nil, nil, nil)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New: %v, want an error wrapping ErrConfig", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.field) || strings.Contains(msg, "secretpw") {
				t.Errorf("error %q must name %s and no password", msg, tc.field)
			}
		})
	}
	if _, err := New(Config{}, nil, dirBlobs{}, nil, nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("nil hosts: %v", err)
	}
	if _, err := New(Config{}, newFakeHosts(nil, nil), nil, nil, nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("nil blobs: %v", err)
	}
}

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, newFakeHosts(nil, nil), dirBlobs{t.TempDir()}, nil, nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, newFakeHosts(nil, nil), dirBlobs{t.TempDir()}, nil, nil, reg); err == nil {
		t.Error("a second Handler on the same registry must fail to register")
	}
}

func TestMount(t *testing.T) {
	hosts := newFakeHosts(testHosts(), nil)
	h, _ := newTestHandler(t, Config{ServerURL: mustURL(t, "http://198.18.0.1:8080")}, hosts, dirBlobs{t.TempDir()}, nil)
	// Mounted next to another handler on one mux, as kilnd does with /api/v1.
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h.Mount(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	if resp, _ := get(t, http.MethodGet, srv.URL+"/api/v1/hosts", ""); resp.StatusCode != http.StatusTeapot {
		t.Errorf("api route: %d", resp.StatusCode)
	}
	if resp, body := get(t, http.MethodGet, srv.URL+"/boot/52:54:00:00:00:02.ipxe", ""); resp.StatusCode != 200 || !strings.Contains(body, "exit 1") {
		t.Errorf("boot route on the shared mux: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get(t, http.MethodPut, srv.URL+"/boot/report", ""); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT /boot/report: %d, want 405", resp.StatusCode)
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	h, _ := newTestHandler(t, Config{ServerURL: mustURL(t, "http://198.18.0.1:8080")}, newFakeHosts(testHosts(), nil), dirBlobs{t.TempDir()}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	resp, body := get(t, http.MethodGet, "http://"+ln.Addr().String()+"/boot/52:54:00:00:00:02.ipxe", "")
	if resp.StatusCode != 200 || !strings.Contains(body, "no desired image") {
		t.Errorf("Serve: %d %q", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve returned %v after cancel, want nil", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still accepts after Serve returned")
	}
}
