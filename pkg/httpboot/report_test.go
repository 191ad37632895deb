package httpboot

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/testtool"
)

var scriptTokenRE = regexp.MustCompile(`kiln\.token=(\S+)`)

func post(t *testing.T, url, auth, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestReports(t *testing.T) {
	var logs testtool.SyncBuffer
	hosts := newFakeHosts(testHosts(), []fleet.Image{testImage()})
	var (
		hookMu sync.Mutex
		hooked []fleet.BootReport
	)
	cfg := Config{
		ServerURL:      mustURL(t, "http://198.18.0.1:8080"),
		MaxReportBytes: 512,
		OnReport: func(r fleet.BootReport) {
			hookMu.Lock()
			defer hookMu.Unlock()
			hooked = append(hooked, r)
		},
	}
	reg := prometheus.NewRegistry()
	h, err := New(cfg, hosts, dirBlobs{t.TempDir()}, nil, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	reportURL := srv.URL + "/boot/report"

	issue := func() string {
		t.Helper()
		_, script := get(t, "GET", srv.URL+"/boot/"+testMAC+".ipxe", "")
		m := scriptTokenRE.FindStringSubmatch(script)
		if m == nil {
			t.Fatalf("no token in script:\n%s", script)
		}
		return m[1]
	}
	old := issue()
	tok := issue() // supersedes old
	digest := string(testImage().Rootfs.Digest)

	tests := []struct {
		name   string
		auth   string
		body   string
		status int
		inBody string // substring the error body must carry
	}{
		{name: "no authorization", body: `{"phase":"network"}`, status: 401},
		{name: "basic auth", auth: "Basic dXNlcjpwdw==", body: `{"phase":"network"}`, status: 401},
		{name: "empty bearer", auth: "Bearer ", body: `{"phase":"network"}`, status: 401},
		{name: "unknown token", auth: "Bearer nosuchtoken", body: `{"phase":"network"}`, status: 403},
		{name: "malformed token", auth: "Bearer a/b.c", body: `{"phase":"network"}`, status: 403},
		{name: "stale token", auth: "Bearer " + old, body: `{"phase":"network"}`, status: 403, inBody: "stale"},
		{name: "unknown field", auth: "Bearer " + tok, body: `{"phase":"network","token":"x"}`, status: 400, inBody: `"token"`},
		{name: "unknown phase", auth: "Bearer " + tok, body: `{"phase":"exploded"}`, status: 400, inBody: "phase"},
		{name: "bad digest", auth: "Bearer " + tok, body: `{"phase":"fetched","digest":"md5:abc"}`, status: 400, inBody: "digest"},
		{name: "not json", auth: "Bearer " + tok, body: `phase=network`, status: 400},
		{name: "empty body", auth: "Bearer " + tok, body: ``, status: 400, inBody: "empty"},
		{name: "trailing data", auth: "Bearer " + tok, body: `{"phase":"network"} {"phase":"booted"}`, status: 400, inBody: "trailing"},
		{name: "too large", auth: "Bearer " + tok, body: `{"phase":"failed","message":"` + strings.Repeat("x", 600) + `"}`, status: 400, inBody: "512 bytes"},
		{name: "network", auth: "Bearer " + tok, body: `{"phase":"network"}`, status: 204},
		{name: "fetched lowercase scheme", auth: "bearer " + tok, body: `{"phase":"fetched","digest":"` + digest + `","message":"40 MiB in 0.4s"}`, status: 204},
		{name: "booted", auth: "Bearer " + tok, body: `{"phase":"booted","digest":"` + digest + `"}`, status: 204},
		{name: "used token after booted", auth: "Bearer " + tok, body: `{"phase":"booted"}`, status: 403, inBody: "stale"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body, hdr := post(t, reportURL, tc.auth, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%s)", status, tc.status, body)
			}
			if tc.inBody != "" && !strings.Contains(body, tc.inBody) {
				t.Errorf("body %q does not mention %q", body, tc.inBody)
			}
			if status == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}

	hookMu.Lock()
	got := append([]fleet.BootReport(nil), hooked...)
	hookMu.Unlock()
	var phases []string
	for _, r := range got {
		phases = append(phases, r.Phase)
		if r.Host != "r1-n1" || r.Attempt == 0 || r.Image != "testimage@2" {
			t.Errorf("hook got %+v, want the stored report with host, attempt and image", r)
		}
	}
	if strings.Join(phases, ",") != "network,fetched,booted" {
		t.Errorf("hook fired for %v, want network,fetched,booted", phases)
	}
	if hb, _ := hosts.HostByMAC(t.Context(), testMAC); hb.BootedImage != "testimage@2" || string(hb.BootedDigest) != digest {
		t.Errorf("host after booted: %+v", hb)
	}
	for _, p := range []string{"network", "fetched", "booted"} {
		if v := counterValue(t, reg, "kiln_httpboot_reports_total", map[string]string{"phase": p}); v != 1 {
			t.Errorf("reports_total{phase=%s} = %v, want 1", p, v)
		}
	}
	if v := counterValue(t, reg, "kiln_httpboot_requests_total", map[string]string{"endpoint": epReport, "code": "2xx"}); v != 3 {
		t.Errorf("requests{report,2xx} = %v, want 3", v)
	}
	if v := counterValue(t, reg, "kiln_httpboot_requests_total", map[string]string{"endpoint": epReport, "code": "4xx"}); v != float64(len(tests)-3) {
		t.Errorf("requests{report,4xx} = %v, want %d", v, len(tests)-3)
	}
	// The tokens are secrets: no log line may carry them.
	out := logs.String()
	if !strings.Contains(out, "boot report") || !strings.Contains(out, "boot script issued") {
		t.Fatalf("expected log lines are missing:\n%s", out)
	}
	for _, secret := range []string{tok, old} {
		if strings.Contains(out, secret) {
			t.Errorf("log carries a boot token:\n%s", out)
		}
	}
}
