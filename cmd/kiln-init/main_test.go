package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/bootagent"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestReportCmd(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		answers    []int // per request; 204 once exhausted
		noServer   bool  // boot.json names a server that is gone
		noBootJSON bool
		wantCode   int
		wantReqs   int
		wantBody   map[string]string
		wantErr    string // on stderr
	}{
		{name: "booted", args: []string{"booted"}, wantCode: 0, wantReqs: 1,
			wantBody: map[string]string{"phase": "booted", "digest": digest}},
		{name: "failed with a message", args: []string{"failed", "disk", "full"}, wantCode: 0, wantReqs: 1,
			wantBody: map[string]string{"phase": "failed", "digest": digest, "message": "disk full"}},
		{name: "retried after 503", args: []string{"booted"}, answers: []int{503}, wantCode: 0, wantReqs: 2,
			wantBody: map[string]string{"phase": "booted", "digest": digest}},
		{name: "stale token", args: []string{"booted"}, answers: []int{403}, wantCode: 1, wantReqs: 1, wantErr: "403 Forbidden",
			wantBody: map[string]string{"phase": "booted", "digest": digest}},
		{name: "unknown phase", args: []string{"rebooting"}, wantCode: 2, wantReqs: 0, wantErr: "unknown boot phase"},
		{name: "no phase", args: nil, wantCode: 2, wantReqs: 0, wantErr: "usage"},
		{name: "server unreachable", args: []string{"booted"}, noServer: true, wantCode: 1, wantErr: "not delivered"},
		{name: "no boot.json", args: []string{"booted"}, noBootJSON: true, wantCode: 1, wantErr: "boot.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu     sync.Mutex
				bodies []map[string]string
				auths  []string
			)
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/boot/report" || r.Method != http.MethodPost {
					http.NotFound(w, r)
					return
				}
				var m map[string]string
				if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				bodies = append(bodies, m)
				auths = append(auths, r.Header.Get("Authorization"))
				status := http.StatusNoContent
				if i := len(bodies) - 1; i < len(tt.answers) {
					status = tt.answers[i]
				}
				w.WriteHeader(status)
			}))
			defer ts.Close()
			if tt.noServer {
				ts.Close()
			}
			p := filepath.Join(t.TempDir(), "boot.json")
			if !tt.noBootJSON {
				err := bootagent.WriteBootInfo(p, bootagent.BootInfo{
					Host: "r12-n07", Image: "test@1", Digest: digest, Server: ts.URL, Token: "tok_123", MAC: "52:54:00:12:34:56",
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			var stderr bytes.Buffer
			code := reportCmd(context.Background(), tt.args, p, &stderr, reportOptions{attempts: 3, backoff: time.Millisecond, timeout: time.Second})
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if tt.wantErr != "" {
				if !strings.Contains(stderr.String(), tt.wantErr) || strings.Count(stderr.String(), "\n") != 1 {
					t.Errorf("stderr %q, want one line with %q", stderr.String(), tt.wantErr)
				}
			} else if stderr.Len() != 0 {
				t.Errorf("stderr %q, want nothing", stderr.String())
			}
			if strings.Contains(stderr.String(), "tok_123") {
				t.Errorf("stderr leaks the token: %q", stderr.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if tt.noServer {
				return
			}
			if len(bodies) != tt.wantReqs {
				t.Fatalf("server got %d requests, want %d", len(bodies), tt.wantReqs)
			}
			for i := range bodies {
				if auths[i] != "Bearer tok_123" {
					t.Errorf("Authorization %q", auths[i])
				}
				if len(bodies[i]) != len(tt.wantBody) {
					t.Errorf("body %v, want %v", bodies[i], tt.wantBody)
				}
				for k, v := range tt.wantBody {
					if bodies[i][k] != v {
						t.Errorf("body %s = %q, want %q", k, bodies[i][k], v)
					}
				}
			}
		})
	}
}
