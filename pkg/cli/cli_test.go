package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

func TestHostsAndRef(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		sel   string
		hosts []string
		ref   string
		usage bool
	}{
		{"hosts and ref", []string{"n1", "n2", "deb@1"}, "", []string{"n1", "n2"}, "deb@1", false},
		{"selector and ref", []string{"deb@latest"}, "rack=r1", []string{}, "deb@latest", false},
		{"only a ref", []string{"deb@1"}, "", nil, "", true},
		{"hosts and selector", []string{"n1", "deb@1"}, "rack=r1", nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts, ref, err := hostsAndRef(tc.args, tc.sel)
			var ue usageError
			if tc.usage {
				if !errors.As(err, &ue) {
					t.Fatalf("err %v, want a usage error", err)
				}
				return
			}
			if err != nil || ref != tc.ref || strings.Join(hosts, ",") != strings.Join(tc.hosts, ",") {
				t.Fatalf("got %v %q %v, want %v %q", hosts, ref, err, tc.hosts, tc.ref)
			}
		})
	}
}

func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{10 << 20, "10.0 MiB"},
		{3 << 30, "3.0 GiB"},
		{5 << 40, "5.0 TiB"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := human(tc.n); got != tc.want {
				t.Fatalf("human(%d) = %q, want %q", tc.n, got, tc.want)
			}
		})
	}
}

func TestExactArgs(t *testing.T) {
	root := &cobra.Command{Use: "kiln"}
	cmd := &cobra.Command{Use: "show"}
	root.AddCommand(cmd)
	for _, tc := range []struct {
		n    int
		args []string
		want string
	}{
		{1, []string{"a"}, ""},
		{0, nil, ""},
		{1, nil, "kiln show takes 1 argument(s), got 0 (see --help)"},
		{1, []string{"a", "b"}, "kiln show takes 1 argument(s), got 2"},
		{0, []string{"a"}, "takes 0 argument(s), got 1"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			err := exactArgs(tc.n)(cmd, tc.args)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want a usage error containing %q", err, tc.want)
			}
		})
	}
}

// stub is a fake kilnd: it answers the few API paths the exit code tests
// use, and records the requests.
func stub(t *testing.T) (*httptest.Server, *[]string) {
	t.Helper()
	var seen []string
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api/v1/hosts/{name}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("name") {
		case "n1":
			writeJSON(w, 200, fleet.Host{Name: "n1", MACs: []string{"52:54:00:00:00:01"}})
		case "einval":
			writeJSON(w, 500, api.Error{Error: "read /var/lib/kiln/kiln.db: invalid argument"})
		case "args":
			writeJSON(w, 400, api.Error{Error: "invalid: host name \"args\" takes 2 arg(s)"})
		default:
			writeJSON(w, 404, api.Error{Error: "host " + r.PathValue("name") + ": not found"})
		}
	})
	mux.HandleFunc("GET /api/v1/rollouts/{id}", func(w http.ResponseWriter, r *http.Request) {
		st := map[string]fleet.RolloutState{"r-ok": fleet.RolloutSucceeded, "r-failed": fleet.RolloutFailed, "r-cancelled": fleet.RolloutCancelled}[r.PathValue("id")]
		if st == "" {
			writeJSON(w, 404, api.Error{Error: "rollout not found"})
			return
		}
		writeJSON(w, 200, api.RolloutStatus{Rollout: fleet.Rollout{ID: r.PathValue("id"), State: st, Error: "2 hosts failed",
			Finished: time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)},
			Hosts: []fleet.RolloutHost{{Host: "n1", State: fleet.HostBooted}}, Counts: fleet.RolloutCounts{Total: 1, Booted: 1}})
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestRunExitCodes(t *testing.T) {
	srv, seen := stub(t)
	env := func(k string) (string, bool) {
		v, ok := map[string]string{"KILN_SERVER": srv.URL, "KILN_TOKEN": "stub-token"}[k]
		return v, ok
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
		stdout string
	}{
		{"ok", []string{"host", "show", "n1"}, ExitOK, "", "52:54:00:00:00:01"},
		{"ok json", []string{"host", "show", "n1", "-o", "json"}, ExitOK, "", `"name": "n1"`},
		{"unknown host", []string{"host", "show", "nope"}, ExitError, "kiln: host nope: not found", ""},
		{"server error mentioning invalid argument", []string{"host", "show", "einval"}, ExitError, "invalid argument", ""},
		{"server error mentioning arg(s)", []string{"host", "show", "args"}, ExitError, "arg(s)", ""},
		{"missing argument", []string{"host", "show"}, ExitUsage, "takes 1 argument(s), got 0", ""},
		{"extra argument", []string{"history", "a", "b"}, ExitUsage, "takes 1 argument(s)", ""},
		{"unknown command", []string{"frobnicate"}, ExitUsage, "unknown command", ""},
		{"unknown subcommand", []string{"host", "lsit"}, ExitUsage, `unknown command "lsit" for "kiln host"`, ""},
		{"unknown rollout subcommand", []string{"rollout", "stop", "r-ok"}, ExitUsage, `unknown command "stop"`, ""},
		{"group alone shows help", []string{"image"}, ExitOK, "", "Available Commands"},
		{"unknown flag", []string{"host", "list", "--colour"}, ExitUsage, "unknown flag", ""},
		{"flag without value", []string{"host", "list", "--selector"}, ExitUsage, "flag needs an argument", ""},
		{"bad flag value", []string{"reimage", "n1", "deb@1", "--batch", "many"}, ExitUsage, "invalid argument", ""},
		{"bad output", []string{"host", "list", "-o", "yaml"}, ExitUsage, `-o "yaml"`, ""},
		{"no hosts", []string{"assign", "deb@1"}, ExitUsage, "name at least one host", ""},
		{"no args at all", []string{"assign"}, ExitUsage, "arg(s)", ""},
		{"bad label", []string{"host", "add", "n9", "--mac", "52:54:00:00:00:09", "--label", "rack"}, ExitUsage, "not k=v", ""},
		{"bad power action", []string{"host", "power", "n1", "reboot"}, ExitUsage, "power action", ""},
		{"import without rootfs", []string{"image", "import", "deb@1"}, ExitUsage, "--rootfs is required", ""},
		{"refresh without image", []string{"refresh"}, ExitUsage, "--image is required", ""},
		{"bad server", []string{"host", "show", "n1", "--server", "ftp://x"}, ExitUsage, "not an http(s)://HOST:PORT URL", ""},
		{"rollout succeeded", []string{"rollout", "watch", "r-ok"}, ExitOK, "", "succeeded"},
		{"rollout failed", []string{"rollout", "watch", "r-failed"}, ExitRollout, "rollout r-failed failed: 2 hosts failed", "failed"},
		{"rollout cancelled", []string{"rollout", "watch", "r-cancelled"}, ExitRollout, "cancelled", ""},
		{"rollout show of a failed rollout", []string{"rollout", "show", "r-failed"}, ExitOK, "", "2 hosts failed"},
		{"unknown rollout", []string{"rollout", "watch", "r-nope"}, ExitError, "rollout not found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			code := Run(ctx, tc.args, &out, &errb, env)
			if code != tc.code || !strings.Contains(errb.String(), tc.stderr) || !strings.Contains(out.String(), tc.stdout) {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if code != ExitOK && code != ExitRollout && strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
				t.Fatalf("a failure prints more than one line:\n%s", errb.String())
			}
		})
	}
	for _, s := range *seen {
		if !strings.HasSuffix(s, "Bearer stub-token") {
			t.Fatalf("request without the KILN_TOKEN: %s", s)
		}
	}

	// An unreachable kilnd is an operation failure, not a usage error.
	unreach := func(k string) (string, bool) {
		v, ok := map[string]string{"KILN_SERVER": "http://127.0.0.1:1", "KILN_TOKEN": "t"}[k]
		return v, ok
	}
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"host", "list"}, &out, &errb, unreach); code != ExitError || !strings.Contains(errb.String(), "kilnd at 127.0.0.1:1") {
		t.Fatalf("unreachable kilnd: exit %d: %s", code, errb.String())
	}
}
