package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/imagestore"
	"github.com/immutableinfra/kiln/pkg/store"
)

func TestNewServerRequires(t *testing.T) {
	e := newEnv(t)
	full := api.Config{Store: e.st, Images: e.images, Sealer: e.box, Token: testToken}
	for _, tc := range []struct {
		name string
		mod  func(*api.Config)
		want string
	}{
		{"no store", func(c *api.Config) { c.Store = nil }, "Store"},
		{"no images", func(c *api.Config) { c.Images = nil }, "Images"},
		{"no sealer", func(c *api.Config) { c.Sealer = nil }, "Sealer"},
		{"no token", func(c *api.Config) { c.Token = "" }, "Token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := full
			tc.mod(&cfg)
			if _, err := api.NewServer(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewServer: %v, want an error naming %s", err, tc.want)
			}
		})
	}
	if _, err := api.NewServer(full); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
}

func TestNewClientRejectsBadServer(t *testing.T) {
	for _, s := range []string{"", "127.0.0.1:8080", "ftp://h:1", "http://", "::bad"} {
		t.Run(s, func(t *testing.T) {
			if _, err := api.NewClient(s, "t", "a", nil); err == nil {
				t.Fatalf("NewClient(%q) accepted", s)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	const wrong = "wrong-token-ZZZ-987"
	for _, tc := range []struct {
		name   string
		header string // Authorization header; "-" for none
		path   string
		code   int
	}{
		{"no header", "-", "/api/v1/hosts", http.StatusUnauthorized},
		{"empty bearer", "Bearer ", "/api/v1/hosts", http.StatusUnauthorized},
		{"basic scheme", "Basic " + testToken, "/api/v1/hosts", http.StatusUnauthorized},
		{"wrong token", "Bearer " + wrong, "/api/v1/hosts", http.StatusForbidden},
		{"token prefix only", "Bearer " + testToken[:5], "/api/v1/hosts", http.StatusForbidden},
		{"right token", "Bearer " + testToken, "/api/v1/hosts", http.StatusOK},
		{"right token outside /api/v1", "Bearer " + testToken, "/metrics", http.StatusNotFound},
		{"right token, unknown api path", "Bearer " + testToken, "/api/v1/nope", http.StatusNotFound},
		{"no token outside /api/v1", "-", "/healthz", http.StatusUnauthorized},
		{"right token, wrong method", "Bearer " + testToken, "DELETE /api/v1/events", http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, path, ok := strings.Cut(tc.path, " ")
			if !ok {
				method, path = "GET", tc.path
			}
			req, _ := http.NewRequest(method, e.srv.URL+path, nil)
			if tc.header != "-" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.code)
			}
			if bytes.Contains(body, []byte(wrong)) || bytes.Contains(body, []byte(testToken[:5])) {
				t.Fatalf("the error body echoes the token: %s", body)
			}
		})
	}

	// Through the client: the same codes as StatusErrors.
	_, err := e.client("").ListHosts(e.ctx, "")
	wantStatus(t, err, http.StatusUnauthorized, "KILN_TOKEN")
	_, err = e.client(wrong).ListHosts(e.ctx, "")
	if se := wantStatus(t, err, http.StatusForbidden); strings.Contains(se.Message, wrong) {
		t.Fatalf("403 echoes the token: %q", se.Message)
	}
	for _, s := range []error{fleet.ErrNotFound, fleet.ErrInvalid, fleet.ErrConflict} {
		if errors.Is(err, s) {
			t.Errorf("a 403 matches %v", s)
		}
	}
	if strings.Contains(e.log.String(), wrong) {
		t.Fatal("the server log holds the wrong token")
	}
}

func TestHostErrors(t *testing.T) {
	e := newEnv(t)
	e.addHost("r1-n1", "52:54:00:00:00:01", map[string]string{"rack": "r1"})
	if _, err := e.c.CreateHost(e.ctx, api.HostRequest{Name: "r1-n9", MACs: []string{"52:54:00:00:00:09"}, IP: "198.18.0.9/15"}); err != nil {
		t.Fatal(err)
	}
	mac := func(i int) []string { return []string{fmt.Sprintf("52:54:00:00:01:%02x", i)} }
	for i, tc := range []struct {
		name     string
		req      api.HostRequest
		code     int
		sentinel error
		want     []string
	}{
		{"bad mac", api.HostRequest{Name: "h", MACs: []string{"52:54:00:zz"}}, 400, fleet.ErrInvalid, []string{`mac "52:54:00:zz"`}},
		{"no mac", api.HostRequest{Name: "h"}, 400, fleet.ErrInvalid, []string{"mac"}},
		{"same mac twice", api.HostRequest{Name: "h", MACs: []string{"52:54:00:00:02:01", "52-54-00-00-02-01"}}, 400, fleet.ErrInvalid, []string{"given twice"}},
		{"bad name", api.HostRequest{Name: "R9!", MACs: mac(1)}, 400, fleet.ErrInvalid, []string{"host name", `"R9!"`}},
		{"empty name", api.HostRequest{Name: "", MACs: mac(1)}, 400, fleet.ErrInvalid, []string{"host name is empty"}},
		{"bad label key", api.HostRequest{Name: "h", MACs: mac(1), Labels: map[string]string{"-rack": "r1"}}, 400, fleet.ErrInvalid, []string{"label key"}},
		{"bad label value", api.HostRequest{Name: "h", MACs: mac(1), Labels: map[string]string{"rack": "a b"}}, 400, fleet.ErrInvalid, []string{"label rack"}},
		{"bad ip", api.HostRequest{Name: "h", MACs: mac(1), IP: "198.18.0.300/15"}, 400, fleet.ErrInvalid, []string{`ip "198.18.0.300/15"`}},
		{"ip without prefix", api.HostRequest{Name: "h", MACs: mac(1), IP: "198.18.0.10"}, 400, fleet.ErrInvalid, []string{"ADDR/PREFIX"}},
		{"ipv6", api.HostRequest{Name: "h", MACs: mac(1), IP: "2001:db8::1/64"}, 400, fleet.ErrInvalid, []string{"not IPv4"}},
		{"bad gateway", api.HostRequest{Name: "h", MACs: mac(1), IP: "198.18.0.10/24", Gateway: "gw"}, 400, fleet.ErrInvalid, []string{`gateway "gw"`}},
		{"gateway outside the subnet", api.HostRequest{Name: "h", MACs: mac(1), IP: "198.18.0.10/24", Gateway: "198.18.1.1"}, 400, fleet.ErrInvalid, []string{"gateway 198.18.1.1 is outside 198.18.0.0/24"}},
		{"gateway without ip", api.HostRequest{Name: "h", MACs: mac(1), Gateway: "198.18.0.1"}, 400, fleet.ErrInvalid, []string{"gateway"}},
		{"bad bmc url", api.HostRequest{Name: "h", MACs: mac(1), BMCURL: "telnet://x"}, 400, fleet.ErrInvalid, []string{"bmc"}},
		{"password without bmc url", api.HostRequest{Name: "h", MACs: mac(1), BMCPassword: "pw-NOURL-1"}, 400, fleet.ErrInvalid, []string{"without a bmc url"}},
		{"duplicate host", api.HostRequest{Name: "r1-n1", MACs: mac(2)}, 409, fleet.ErrExists, []string{"r1-n1", "already exists"}},
		{"duplicate mac", api.HostRequest{Name: "h", MACs: []string{"52-54-00-00-00-01"}}, 409, fleet.ErrConflict, []string{"mac 52:54:00:00:00:01 belongs to host r1-n1"}},
		{"duplicate ip", api.HostRequest{Name: "h", MACs: mac(1), IP: "198.18.0.9/24"}, 409, fleet.ErrConflict, []string{"ip 198.18.0.9 belongs to host r1-n9"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.CreateHost(e.ctx, tc.req)
			wantStatus(t, err, tc.code, tc.want...)
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("errors.Is(%v, %v) is false", err, tc.sentinel)
			}
			// Only its own sentinel: a 409 says which kind it is.
			for _, other := range []error{fleet.ErrNotFound, fleet.ErrExists, fleet.ErrConflict, fleet.ErrInUse} {
				if other != tc.sentinel && errors.Is(err, other) {
					t.Fatalf("%v also matches %v", err, other)
				}
			}
		})
		_ = i
	}
	// None of the refused hosts was stored.
	hosts, err := e.c.ListHosts(e.ctx, "")
	if err != nil || len(hosts) != 2 {
		t.Fatalf("hosts after refusals: %v %v", hosts, err)
	}
}

func TestRequestBodyErrors(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.MaxBodyBytes = 512 })
	e.addHost("n1", "52:54:00:00:00:01", nil)
	big := `{"name":"h","macs":["52:54:00:00:00:09"],"labels":{"k":"` + strings.Repeat("v", 600) + `"}}`
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"unknown field", "POST", "/api/v1/hosts", `{"name":"h","macs":["52:54:00:00:00:09"],"colour":"red"}`, 400, `unknown field "colour"`},
		{"body too large", "POST", "/api/v1/hosts", big, 400, "too large"},
		{"not json", "POST", "/api/v1/hosts", `name=h`, 400, "bad request body"},
		{"empty body", "POST", "/api/v1/assign", ``, 400, "bad request body"},
		{"wrong type", "POST", "/api/v1/hosts/n1/labels", `{"changes":"rack=r1"}`, 400, "changes"},
		{"unknown field in gc", "POST", "/api/v1/images/gc", `{"keep":1,"force":true}`, 400, `unknown field "force"`},
		{"import not multipart", "POST", "/api/v1/images", `{}`, 400, "multipart"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.raw(tc.method, tc.path, "application/json", strings.NewReader(tc.body))
			var msg api.Error
			if err := json.Unmarshal([]byte(body), &msg); err != nil {
				t.Fatalf("error body is not an api.Error: %s: %v", body, err)
			}
			if code != tc.code || !strings.Contains(msg.Error, tc.want) {
				t.Fatalf("%d %s; want %d containing %q", code, body, tc.code, tc.want)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t)
	e.addHost("n1", "52:54:00:00:00:01", nil)
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"host", func() error { _, err := e.c.Host(e.ctx, "nope"); return err }, "host nope"},
		{"delete host", func() error { return e.c.DeleteHost(e.ctx, "nope") }, "host nope"},
		{"label host", func() error { _, err := e.c.LabelHost(e.ctx, "nope", []string{"a=b"}); return err }, "host nope"},
		{"history", func() error { _, err := e.c.History(e.ctx, "nope"); return err }, "host nope"},
		{"reports", func() error { _, err := e.c.Reports(e.ctx, "nope", 5); return err }, "host nope"},
		{"revert", func() error { _, err := e.c.Revert(e.ctx, "nope", api.RevertRequest{}); return err }, "host nope"},
		{"image", func() error { _, err := e.c.Image(e.ctx, "deb@1"); return err }, "image deb@1"},
		{"image latest", func() error { _, err := e.c.Image(e.ctx, "deb@latest"); return err }, "no version of deb"},
		{"remove image", func() error { _, err := e.c.RemoveImage(e.ctx, "deb@1"); return err }, "image deb@1"},
		{"assign unknown image", func() error {
			_, err := e.c.Assign(e.ctx, api.AssignRequest{Hosts: []string{"n1"}, Ref: "deb@1"})
			return err
		}, "image deb@1"},
		{"rollout", func() error { _, err := e.c.Rollout(e.ctx, "r-nope"); return err }, "rollout r-nope"},
		{"rollout action", func() error { _, err := e.c.RolloutAction(e.ctx, "r-nope", "pause"); return err }, "rollout r-nope"},
		{"power", func() error { _, err := e.c.Power(e.ctx, "nope", "status"); return err }, "host nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			wantStatus(t, err, http.StatusNotFound, tc.want)
			if !errors.Is(err, fleet.ErrNotFound) || errors.Is(err, fleet.ErrInvalid) || errors.Is(err, fleet.ErrConflict) {
				t.Fatalf("sentinels of %v are wrong", err)
			}
		})
	}
}

// failingImages is an Images whose calls fail with err: it reaches the
// status mapping for errors the real image store cannot cheaply produce.
type failingImages struct{ err error }

func (f failingImages) Import(ctx context.Context, req imagestore.ImportRequest) (fleet.Image, bool, error) {
	io.Copy(io.Discard, req.Rootfs)
	return fleet.Image{}, false, f.err
}
func (f failingImages) Remove(ctx context.Context, ref string) (int64, error) { return 0, f.err }
func (f failingImages) GC(ctx context.Context, keep int, dryRun bool) (imagestore.GCResult, error) {
	return imagestore.GCResult{}, f.err
}

func TestStatusMapping(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code int
		log  bool
	}{
		{"disk full", fmt.Errorf("import deb@1: rootfs: %w while writing it", imagestore.ErrDiskFull), http.StatusInsufficientStorage, false},
		{"not squashfs", fmt.Errorf("rootfs: %w", imagestore.ErrNotSquashfs), http.StatusBadRequest, false},
		{"no kernel", fmt.Errorf("x: %w", imagestore.ErrNoKernel), http.StatusBadRequest, false},
		{"no init", fmt.Errorf("x: %w", imagestore.ErrNoInit), http.StatusBadRequest, false},
		{"in use", fmt.Errorf("x: %w", fleet.ErrInUse), http.StatusConflict, false},
		{"anything else", errors.New("the disk controller caught fire"), http.StatusInternalServerError, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *api.Config) { c.Images = failingImages{tc.err} })
			checks := map[string]func() error{
				"import": func() error {
					_, err := e.c.ImportImage(e.ctx, "deb@1", "", "", api.ImportFiles{Rootfs: strings.NewReader("data")})
					return err
				},
				"rm": func() error { _, err := e.c.RemoveImage(e.ctx, "deb@1"); return err },
				"gc": func() error { _, err := e.c.GC(e.ctx, 1, false); return err },
			}
			for what, call := range checks {
				err := call()
				se := wantStatus(t, err, tc.code)
				if se.Message != tc.err.Error() {
					t.Errorf("%s: message %q, want %q", what, se.Message, tc.err.Error())
				}
			}
			if logged := strings.Contains(e.log.String(), "api request failed"); logged != tc.log {
				t.Fatalf("error logged: %v, want %v\n%s", logged, tc.log, e.log.String())
			}
		})
	}
}

func TestUnavailable(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Power, c.Rollouts = nil, nil })
	e.addHost("n1", "52:54:00:00:00:01", nil)
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"power", func() error { _, err := e.c.Power(e.ctx, "n1", "status"); return err }, "power control"},
		{"start rollout", func() error {
			_, err := e.c.StartRollout(e.ctx, api.RolloutRequest{Hosts: []string{"n1"}, Ref: "a@1"})
			return err
		}, "rollouts"},
		{"refresh", func() error { _, err := e.c.Refresh(e.ctx, api.RefreshRequest{Image: "a"}); return err }, "rollouts"},
		{"list rollouts", func() error { _, err := e.c.Rollouts(e.ctx); return err }, "rollouts"},
		{"get rollout", func() error { _, err := e.c.Rollout(e.ctx, "r-1"); return err }, "rollouts"},
		{"rollout action", func() error { _, err := e.c.RolloutAction(e.ctx, "r-1", "pause"); return err }, "rollouts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(), http.StatusServiceUnavailable, tc.want, "not available")
		})
	}
}

func TestHostLifecycleNeverShowsPassword(t *testing.T) {
	const password = "Sup3r-S3cret-pw!"
	e := newEnv(t)
	h, err := e.c.CreateHost(e.ctx, api.HostRequest{Name: "r1-n1", MACs: []string{"52-54-00-AA-BB-01"}, IP: "198.18.0.10/15", Gateway: "198.18.0.1",
		Labels: map[string]string{"rack": "r1", "role": "web"}, BMCURL: "ipmi://admin@198.18.0.201:623", BMCPassword: password})
	if err != nil {
		t.Fatal(err)
	}
	if h.MACs[0] != "52:54:00:aa:bb:01" || h.BMC == nil || !h.BMC.HasPassword || h.BMC.URL != "ipmi://admin@198.18.0.201:623" || h.IP.String() != "198.18.0.10/15" {
		t.Fatalf("created host: %+v %+v", h, h.BMC)
	}
	// The password is stored sealed, bound to the host name.
	sealed, err := e.st.Secret(e.ctx, "r1-n1")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(password)) {
		t.Fatal("the stored secret is the plaintext password")
	}
	if pt, err := e.box.Open("r1-n1", sealed); err != nil || string(pt) != password {
		t.Fatalf("sealed secret opens to %q, %v", pt, err)
	}
	// A password in the URL is refused without echoing it.
	_, err = e.c.CreateHost(e.ctx, api.HostRequest{Name: "r1-n9", MACs: []string{"52:54:00:aa:bb:09"}, BMCURL: "ipmi://admin:" + password + "@198.18.0.209"})
	wantStatus(t, err, http.StatusBadRequest, "bmc")
	// A host without a password says so.
	h2, err := e.c.CreateHost(e.ctx, api.HostRequest{Name: "r1-n2", MACs: []string{"52:54:00:aa:bb:02"}, BMCURL: "redfish://root@198.18.0.202", BMCInsecureTLS: true, Labels: map[string]string{"rack": "r1"}})
	if err != nil || h2.BMC == nil || h2.BMC.HasPassword || !h2.BMC.InsecureTLS {
		t.Fatalf("host without password: %+v %v", h2, err)
	}
	if _, err := e.st.Secret(e.ctx, "r1-n2"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("secret of a host without password: %v", err)
	}

	// Show and list.
	got, err := e.c.Host(e.ctx, "r1-n1")
	if err != nil || got.Name != "r1-n1" || got.Gateway.String() != "198.18.0.1" || got.Labels["role"] != "web" || !got.BMC.HasPassword {
		t.Fatalf("show: %+v %v", got, err)
	}
	for _, tc := range []struct {
		sel  string
		want []string
	}{
		{"", []string{"r1-n1", "r1-n2"}},
		{"rack=r1", []string{"r1-n1", "r1-n2"}},
		{"role=web", []string{"r1-n1"}},
		{"rack=r1,!role", []string{"r1-n2"}},
		{"role!=web", []string{"r1-n2"}},
		{"rack=r2", nil},
	} {
		t.Run("list "+tc.sel, func(t *testing.T) {
			hs, err := e.c.ListHosts(e.ctx, tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, h := range hs {
				names = append(names, h.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("selector %q: %v, want %v", tc.sel, names, tc.want)
			}
		})
	}
	code, body := e.raw("GET", "/api/v1/hosts?selector=rack%3Dr2", "", nil)
	if code != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("an empty list is %d %q, want []", code, body)
	}
	_, err = e.c.ListHosts(e.ctx, "rack=r1,-x")
	wantStatus(t, err, http.StatusBadRequest, "selector")

	// Labels: set, change, remove; bad changes are refused and change nothing.
	for _, tc := range []struct {
		name    string
		changes []string
		code    int
		want    string
	}{
		{"set", []string{"zone=a", "rack=r7"}, 200, "rack=r7,role=web,zone=a"},
		{"remove", []string{"role-", "zone-"}, 200, "rack=r7"},
		{"remove absent", []string{"nothing-"}, 200, "rack=r7"},
		{"not k=v", []string{"rack"}, 400, `label "rack" is not k=v`},
		{"bad key", []string{"rack=r1", "=x"}, 400, "label key"},
		{"bad value", []string{"rack=a,b"}, 400, "rack"},
	} {
		t.Run("label "+tc.name, func(t *testing.T) {
			h, err := e.c.LabelHost(e.ctx, "r1-n1", tc.changes)
			if tc.code != 200 {
				wantStatus(t, err, tc.code, tc.want)
				h, err = e.c.Host(e.ctx, "r1-n1")
				if err != nil || fleet.SortedLabels(h.Labels) != "rack=r7" {
					t.Fatalf("a refused change changed labels: %v", h.Labels)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fleet.SortedLabels(h.Labels); got != tc.want {
				t.Fatalf("labels %s, want %s", got, tc.want)
			}
		})
	}

	// Delete removes the host, its MAC and its secret; the MAC is free again.
	if err := e.c.DeleteHost(e.ctx, "r1-n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Host(e.ctx, "r1-n1"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("deleted host: %v", err)
	}
	if _, err := e.st.Secret(e.ctx, "r1-n1"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("secret after delete: %v", err)
	}
	if _, err := e.c.CreateHost(e.ctx, api.HostRequest{Name: "r1-n3", MACs: []string{"52:54:00:aa:bb:01"}}); err != nil {
		t.Fatalf("the deleted host's MAC is not free: %v", err)
	}
	evs, err := e.c.Events(e.ctx, "r1-n1", "", -1)
	if err != nil || len(evs) != 2 || evs[0].Kind != "host.add" || evs[1].Kind != "host.rm" || evs[1].Actor != testActor {
		t.Fatalf("events of r1-n1: %+v %v", evs, err)
	}

	// The password was never in any response body nor in the server log.
	bodies := e.rec.all()
	if len(bodies) < 15 {
		t.Fatalf("only %d response bodies recorded", len(bodies))
	}
	for i, b := range bodies {
		if bytes.Contains(b, []byte(password)) {
			t.Fatalf("response %d holds the BMC password: %s", i, b)
		}
	}
	if strings.Contains(e.log.String(), password) {
		t.Fatalf("the server log holds the BMC password:\n%s", e.log.String())
	}
}

// Host updates: each step changes only what it names, in one transaction with
// the sealed password, and a refused step changes nothing.
func TestUpdateHost(t *testing.T) {
	const pw1, pw2 = "first-Pw-111", "rotated-Pw-222"
	e := newEnv(t)
	if _, err := e.c.CreateHost(e.ctx, api.HostRequest{Name: "n1", MACs: []string{"52:54:00:aa:00:01"}, IP: "198.18.0.10/15", Gateway: "198.18.0.1",
		BMCURL: "ipmi://admin@198.18.0.201", BMCPassword: pw1, Labels: map[string]string{"rack": "r1"}}); err != nil {
		t.Fatal(err)
	}
	e.addHost("n2", "52:54:00:aa:00:02", nil)
	str := func(s string) *string { return &s }
	yes := true
	secret := func() string {
		sealed, err := e.st.Secret(e.ctx, "n1")
		if errors.Is(err, fleet.ErrNotFound) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		pt, err := e.box.Open("n1", sealed)
		if err != nil {
			t.Fatal(err)
		}
		return string(pt)
	}
	// show sums up the fields updates touch.
	show := func(h fleet.Host) string {
		bmc := "-"
		if h.BMC != nil {
			bmc = fmt.Sprintf("%s pw=%v tls=%v", h.BMC.URL, h.BMC.HasPassword, h.BMC.InsecureTLS)
		}
		return fmt.Sprintf("macs=%s ip=%v gw=%v bmc=%s netboot=%v labels=%s", strings.Join(h.MACs, ","), h.IP, h.Gateway, bmc, !h.NetbootDisabled, fleet.SortedLabels(h.Labels))
	}
	for _, tc := range []struct {
		name   string
		req    api.HostUpdate
		code   int
		want   string // show() after the step, or the error text
		secret string
	}{
		{"new NIC", api.HostUpdate{MACs: []string{"52-54-00-AA-00-11"}}, 200,
			"macs=52:54:00:aa:00:11 ip=198.18.0.10/15 gw=198.18.0.1 bmc=ipmi://admin@198.18.0.201 pw=true tls=false netboot=true labels=rack=r1", pw1},
		{"rotate password", api.HostUpdate{BMCPassword: str(pw2)}, 200,
			"macs=52:54:00:aa:00:11 ip=198.18.0.10/15 gw=198.18.0.1 bmc=ipmi://admin@198.18.0.201 pw=true tls=false netboot=true labels=rack=r1", pw2},
		{"move to redfish", api.HostUpdate{BMCURL: str("redfish://root@198.18.0.201"), BMCInsecureTLS: &yes}, 200,
			"macs=52:54:00:aa:00:11 ip=198.18.0.10/15 gw=198.18.0.1 bmc=redfish://root@198.18.0.201 pw=true tls=true netboot=true labels=rack=r1", pw2},
		{"new address and gateway", api.HostUpdate{IP: str("10.1.0.7/16"), Gateway: str("10.1.0.1")}, 200,
			"macs=52:54:00:aa:00:11 ip=10.1.0.7/16 gw=10.1.0.1 bmc=redfish://root@198.18.0.201 pw=true tls=true netboot=true labels=rack=r1", pw2},
		{"back to the pool", api.HostUpdate{IP: str("")}, 200,
			"macs=52:54:00:aa:00:11 ip=invalid Prefix gw=invalid IP bmc=redfish://root@198.18.0.201 pw=true tls=true netboot=true labels=rack=r1", pw2},
		{"netboot off", api.HostUpdate{NetbootDisabled: &yes}, 200,
			"macs=52:54:00:aa:00:11 ip=invalid Prefix gw=invalid IP bmc=redfish://root@198.18.0.201 pw=true tls=true netboot=false labels=rack=r1", pw2},
		{"another host's MAC", api.HostUpdate{MACs: []string{"52:54:00:aa:00:02"}, BMCPassword: str("never-stored")}, 409, "mac 52:54:00:aa:00:02 belongs to host n2", pw2},
		{"bad ip", api.HostUpdate{IP: str("10.1.0.7")}, 400, "ADDR/PREFIX", pw2},
		{"gateway outside", api.HostUpdate{IP: str("10.1.0.7/24"), Gateway: str("10.2.0.1")}, 400, "outside", pw2},
		{"bad bmc url", api.HostUpdate{BMCURL: str("telnet://x")}, 400, "bmc", pw2},
		{"nothing", api.HostUpdate{}, 400, "nothing to change", pw2},
		{"unknown host", api.HostUpdate{NetbootDisabled: &yes}, 404, "not found", pw2},
		{"drop the password", api.HostUpdate{BMCPassword: str("")}, 200,
			"macs=52:54:00:aa:00:11 ip=invalid Prefix gw=invalid IP bmc=redfish://root@198.18.0.201 pw=false tls=true netboot=false labels=rack=r1", ""},
		{"password again", api.HostUpdate{BMCPassword: str(pw1)}, 200,
			"macs=52:54:00:aa:00:11 ip=invalid Prefix gw=invalid IP bmc=redfish://root@198.18.0.201 pw=true tls=true netboot=false labels=rack=r1", pw1},
		{"remove the BMC", api.HostUpdate{BMCURL: str("")}, 200,
			"macs=52:54:00:aa:00:11 ip=invalid Prefix gw=invalid IP bmc=- netboot=false labels=rack=r1", ""},
		{"password without a BMC", api.HostUpdate{BMCPassword: str(pw2)}, 400, "without a bmc url", ""},
		{"tls without a BMC", api.HostUpdate{BMCInsecureTLS: &yes}, 400, "no bmc", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "n1"
			if tc.code == 404 {
				name = "n9"
			}
			before, err := e.c.Host(e.ctx, "n1")
			if err != nil {
				t.Fatal(err)
			}
			h, err := e.c.UpdateHost(e.ctx, name, tc.req)
			if tc.code != 200 {
				wantStatus(t, err, tc.code, tc.want)
				if after, _ := e.c.Host(e.ctx, "n1"); show(after) != show(before) {
					t.Fatalf("a refused update changed the host:\n%s\n%s", show(before), show(after))
				}
			} else if err != nil {
				t.Fatal(err)
			} else if got := show(h); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if got := secret(); got != tc.secret {
				t.Fatalf("stored password %q, want %q", got, tc.secret)
			}
		})
	}
	// The new MAC is indexed, the old one free; updates are in the event log.
	if _, err := e.c.CreateHost(e.ctx, api.HostRequest{Name: "n3", MACs: []string{"52:54:00:aa:00:01"}}); err != nil {
		t.Fatalf("the replaced MAC is not free: %v", err)
	}
	evs, err := e.c.Events(e.ctx, "n1", "", -1)
	if err != nil || len(evs) != 10 || evs[1].Kind != "host.update" || evs[1].Message != "changed macs" || evs[3].Message != "changed bmc, bmc_insecure_tls" {
		t.Fatalf("events of n1: %+v %v", evs, err)
	}
	for i, b := range e.rec.all() {
		for _, pw := range []string{pw1, pw2} {
			if bytes.Contains(b, []byte(pw)) {
				t.Fatalf("response %d holds a BMC password: %s", i, b)
			}
		}
	}
	if strings.Contains(e.log.String(), pw1) || strings.Contains(e.log.String(), pw2) {
		t.Fatal("the server log holds a BMC password")
	}
}

func TestAssignRevertHistory(t *testing.T) {
	e := newEnv(t)
	img1, img2 := makeSquashfs(t, "1"), makeSquashfs(t, "2")
	e.importRootfs("deb@1", img1)
	e.importRootfs("deb@2", img2)
	e.addHost("r1-n1", "52:54:00:00:00:01", map[string]string{"rack": "r1"})
	e.addHost("r1-n2", "52:54:00:00:00:02", map[string]string{"rack": "r1"})
	e.addHost("r2-n1", "52:54:00:00:00:03", map[string]string{"rack": "r2"})

	for _, tc := range []struct {
		name string
		req  api.AssignRequest
		code int
		want string
	}{
		{"both hosts and selector", api.AssignRequest{Hosts: []string{"r1-n1"}, Selector: "rack=r1", Ref: "deb@1"}, 400, "not both"},
		{"neither", api.AssignRequest{Ref: "deb@1"}, 400, "no hosts and no selector"},
		{"selector matches nothing", api.AssignRequest{Selector: "rack=r9", Ref: "deb@1"}, 404, `selector "rack=r9" matches no host`},
		{"bad selector", api.AssignRequest{Selector: "=x", Ref: "deb@1"}, 400, "selector term"},
		{"unknown host", api.AssignRequest{Hosts: []string{"r1-n1", "ghost"}, Ref: "deb@1"}, 404, "host ghost"},
		{"bad ref", api.AssignRequest{Hosts: []string{"r1-n1"}, Ref: "Deb@1"}, 400, "image name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.Assign(e.ctx, tc.req)
			wantStatus(t, err, tc.code, tc.want)
		})
	}
	// A refused assignment changed nothing (r1-n1 was named with a ghost).
	if h, _ := e.c.Host(e.ctx, "r1-n1"); h.DesiredImage != "" {
		t.Fatalf("a refused assignment stuck: %q", h.DesiredImage)
	}

	hs, err := e.c.Assign(e.ctx, api.AssignRequest{Selector: "rack=r1", Ref: "deb@1", Reason: "first rollout"})
	if err != nil || len(hs) != 2 || hs[0].DesiredImage != "deb@1" || hs[1].DesiredImage != "deb@1" {
		t.Fatalf("assign by selector: %+v %v", hs, err)
	}
	hs, err = e.c.Assign(e.ctx, api.AssignRequest{Hosts: []string{"r1-n1"}, Ref: "deb@latest"})
	if err != nil || len(hs) != 1 || hs[0].DesiredImage != "deb@2" {
		t.Fatalf("assign deb@latest: %+v %v", hs, err)
	}
	// Assigning the image a host has already adds no history entry.
	if _, err := e.c.Assign(e.ctx, api.AssignRequest{Hosts: []string{"r1-n1"}, Ref: "deb@2"}); err != nil {
		t.Fatal(err)
	}

	h, err := e.c.Revert(e.ctx, "r1-n1", api.RevertRequest{})
	if err != nil || h.DesiredImage != "deb@1" {
		t.Fatalf("revert to previous: %+v %v", h, err)
	}
	hist, err := e.c.History(e.ctx, "r1-n1")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ from, to, reason string }{{"", "deb@1", "first rollout"}, {"deb@1", "deb@2", ""}, {"deb@2", "deb@1", "revert"}}
	if len(hist) != len(want) {
		t.Fatalf("history: %+v", hist)
	}
	for i, w := range want {
		if hist[i].From != w.from || hist[i].To != w.to || hist[i].Reason != w.reason || hist[i].Actor != testActor || hist[i].Time.IsZero() {
			t.Errorf("history[%d] = %+v, want %+v by %s", i, hist[i], w, testActor)
		}
		if i > 0 && !hist[i].Time.After(hist[i-1].Time) {
			t.Errorf("history is not oldest first: %v then %v", hist[i-1].Time, hist[i].Time)
		}
	}

	// Revert --to, and revert with no previous image.
	h, err = e.c.Revert(e.ctx, "r1-n2", api.RevertRequest{To: "deb@2", Reason: "operator choice"})
	if err != nil || h.DesiredImage != "deb@2" {
		t.Fatalf("revert --to: %+v %v", h, err)
	}
	_, err = e.c.Revert(e.ctx, "r2-n1", api.RevertRequest{})
	wantStatus(t, err, http.StatusNotFound, "no previous image")
	_, err = e.c.Revert(e.ctx, "r2-n1", api.RevertRequest{To: "deb@7"})
	wantStatus(t, err, http.StatusNotFound, "deb@7")
	if hist, _ := e.c.History(e.ctx, "r2-n1"); len(hist) != 0 {
		t.Fatalf("failed reverts wrote history: %+v", hist)
	}

	// An assigned image cannot be removed.
	_, err = e.c.RemoveImage(e.ctx, "deb@1")
	se := wantStatus(t, err, http.StatusConflict, "in use", "r1-n1")
	if !errors.Is(se, fleet.ErrInUse) {
		t.Fatal("409 does not match ErrInUse")
	}

	// Events, with the actor from X-Kiln-Actor.
	evs, err := e.c.Events(e.ctx, "r1-n1", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
		if ev.Actor != testActor {
			t.Errorf("event %+v: actor %q, want %q", ev, ev.Actor, testActor)
		}
	}
	if got := strings.Join(kinds, ","); got != "host.add,host.assign,host.assign,host.revert" { // the no-op assign of deb@2 records nothing
		t.Fatalf("event kinds of r1-n1: %s", got)
	}
	if evs[len(evs)-1].Message != "reverted to deb@1" {
		t.Fatalf("revert event: %+v", evs[len(evs)-1])
	}
	if evs, _ := e.c.Events(e.ctx, "", "", 2); len(evs) != 2 || evs[1].Kind != "host.revert" || evs[1].Host != "r1-n2" {
		t.Fatalf("newest 2 events: %+v", evs)
	}

	// Without X-Kiln-Actor the actor is "api".
	anon, err := api.NewClient(e.srv.URL, testToken, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Assign(e.ctx, api.AssignRequest{Hosts: []string{"r2-n1"}, Ref: "deb@1"}); err != nil {
		t.Fatal(err)
	}
	if hist, _ := e.c.History(e.ctx, "r2-n1"); len(hist) != 1 || hist[0].Actor != "api" {
		t.Fatalf("anonymous history: %+v", hist)
	}
}

func TestPower(t *testing.T) {
	e := newEnv(t)
	e.addHost("n1", "52:54:00:00:00:01", nil)
	e.power.state["n1"] = "off"
	for _, tc := range []struct {
		action, state string
		code          int
	}{
		{"status", "off", 200},
		{"on", "on", 200},
		{"off", "off", 200},
		{"cycle", "on", 200},
		{"status", "on", 200},
		{"reboot", "", 400},
		{"", "", 400},
	} {
		t.Run(tc.action, func(t *testing.T) {
			p, err := e.c.Power(e.ctx, "n1", tc.action)
			if tc.code != 200 {
				wantStatus(t, err, tc.code, "power action")
				return
			}
			if err != nil || p.Host != "n1" || p.State != tc.state {
				t.Fatalf("power %s: %+v %v, want state %s", tc.action, p, err, tc.state)
			}
		})
	}
	if got := strings.Join(e.power.calls, ";"); got != "n1 on;n1 off;n1 cycle" {
		t.Fatalf("power calls: %s", got)
	}
	evs, _ := e.c.Events(e.ctx, "n1", "", -1)
	var msgs []string
	for _, ev := range evs {
		if ev.Kind == "host.power" {
			msgs = append(msgs, ev.Message)
		}
	}
	if strings.Join(msgs, ",") != "power on,power off,power cycle" {
		t.Fatalf("power events: %v", msgs)
	}
}

func TestBackup(t *testing.T) {
	e := newEnv(t)
	e.addHost("n1", "52:54:00:00:00:01", map[string]string{"rack": "r1"})
	e.addHost("n2", "52:54:00:00:00:02", nil)
	var buf bytes.Buffer
	if err := e.c.Backup(e.ctx, &buf); err != nil {
		t.Fatal(err)
	}
	// Hosts added after the backup are not in it.
	e.addHost("n3", "52:54:00:00:00:03", nil)
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer st.Close()
	hosts, err := st.ListHosts(e.ctx, nil)
	if err != nil || len(hosts) != 2 || hosts[0].Name != "n1" || hosts[0].Labels["rack"] != "r1" || hosts[1].Name != "n2" {
		t.Fatalf("hosts in the backup: %+v %v", hosts, err)
	}
	if h, err := st.HostByMAC(e.ctx, "52:54:00:00:00:02"); err != nil || h.Name != "n2" {
		t.Fatalf("MAC index in the backup: %v %v", h.Name, err)
	}
	// A backup with a wrong token is refused, and writes nothing.
	var none bytes.Buffer
	err = e.client("nope").Backup(e.ctx, &none)
	wantStatus(t, err, http.StatusForbidden)
	if none.Len() != 0 {
		t.Fatalf("a refused backup wrote %d bytes", none.Len())
	}
}
