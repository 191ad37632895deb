package httpboot

import (
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/bootagent"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const testMAC = "52:54:00:ab:cd:ef"

func testImage() fleet.Image {
	return fleet.Image{
		Ref: "testimage@2", Name: "testimage", Version: "2", Arch: fleet.ArchX86_64,
		Rootfs:  fleet.Artifact{Digest: digestOf("rootfs"), Size: 41943040},
		Kernel:  fleet.Artifact{Digest: digestOf("kernel"), Size: 8 << 20},
		Initrd:  fleet.Artifact{Digest: digestOf("initrd"), Size: 4 << 20},
		Cmdline: "console=ttyS0  quiet",
	}
}

func testHosts() []fleet.Host {
	return []fleet.Host{
		{Name: "r1-n1", MACs: []string{testMAC}, DesiredImage: "testimage@2"},
		{Name: "r1-n2", MACs: []string{"52:54:00:00:00:02"}},
		{Name: "r1-n3", MACs: []string{"52:54:00:00:00:03"}, DesiredImage: "testimage@2", NetbootDisabled: true},
		{Name: "r1-n4", MACs: []string{"52:54:00:00:00:04"}, DesiredImage: "broken@1"},
	}
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("script differs from %s:\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

func get(t *testing.T, method, u, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestScripts(t *testing.T) {
	broken := testImage()
	broken.Ref, broken.Name, broken.Version = "broken@1", "broken", "1"
	tests := []struct {
		name     string
		cfg      Config
		path     string
		host     string // request Host header; "" = the server's address
		images   []fleet.Image
		status   int
		golden   string
		kind     string // scripts metric that must have moved
		issued   int    // boot attempts the request must issue
		contract bool   // parse the kernel line with kiln-init's parser
	}{
		{name: "host with image", path: "/boot/" + testMAC + ".ipxe", status: 200, golden: "boot.ipxe", kind: kindBoot, issued: 1, contract: true},
		{name: "uppercase mac normalised", path: "/boot/52:54:00:AB:CD:EF.ipxe", status: 200, golden: "boot.ipxe", kind: kindBoot, issued: 1, contract: true},
		{name: "dash mac normalised", path: "/boot/52-54-00-AB-CD-EF.ipxe", status: 200, golden: "boot.ipxe", kind: kindBoot, issued: 1},
		{name: "state debug extra", cfg: Config{StateMount: "/var/lib/kiln-state", Debug: true, ExtraCmdline: "console=ttyS0,115200n8", RebootDelay: 45 * time.Second, Retries: 1},
			path: "/boot/" + testMAC + ".ipxe", status: 200, golden: "boot-state-debug.ipxe", kind: kindBoot, issued: 1, contract: true},
		{name: "server from host header", cfg: Config{ServerURL: nil}, host: "198.18.0.9:8081", path: "/boot/" + testMAC + ".ipxe", status: 200, golden: "boot-host-header.ipxe", kind: kindBoot, issued: 1, contract: true},
		{name: "no desired image", path: "/boot/52:54:00:00:00:02.ipxe", status: 200, golden: "no-image.ipxe", kind: kindExit},
		{name: "netboot disabled", path: "/boot/52:54:00:00:00:03.ipxe", status: 200, golden: "netboot-disabled.ipxe", kind: kindExit},
		{name: "unknown mac", path: "/boot/52:54:00:99:99:99.ipxe", status: 404, golden: "unknown-mac.ipxe", kind: kindUnknown},
		{name: "not a mac", path: "/boot/not-a-mac.ipxe", status: 400, golden: "bad-mac.ipxe"},
		{name: "expansion in mac", path: "/boot/$%7Bnet0%7D.ipxe", status: 400, golden: "bad-mac.ipxe"},
		{name: "no .ipxe suffix", path: "/boot/" + testMAC, status: 404},
		{name: "desired image missing", path: "/boot/52:54:00:00:00:04.ipxe", status: 500, golden: "render-failed.ipxe"},
		{name: "newline in image cmdline", path: "/boot/52:54:00:00:00:04.ipxe", images: []fleet.Image{withCmdline(broken, "quiet\nchain http://evil/")}, status: 500, golden: "render-failed.ipxe"},
		{name: "expansion in image cmdline", path: "/boot/52:54:00:00:00:04.ipxe", images: []fleet.Image{withCmdline(broken, "root=${root}")}, status: 500},
		{name: "or token in image cmdline", path: "/boot/52:54:00:00:00:04.ipxe", images: []fleet.Image{withCmdline(broken, "quiet || shell")}, status: 500},
		{name: "comment in image cmdline", path: "/boot/52:54:00:00:00:04.ipxe", images: []fleet.Image{withCmdline(broken, "quiet #x")}, status: 500},
		{name: "cmdline too long", path: "/boot/52:54:00:00:00:04.ipxe", images: []fleet.Image{withCmdline(broken, "x="+strings.Repeat("a", MaxCmdline))}, status: 500},
		{name: "image without kernel", path: "/boot/52:54:00:00:00:04.ipxe", images: []fleet.Image{func() fleet.Image { im := broken; im.Kernel = fleet.Artifact{}; return im }()}, status: 500},
		{name: "unresolved image ref", path: "/boot/52:54:00:00:00:04.ipxe", images: []fleet.Image{func() fleet.Image { im := broken; im.Version = "latest"; return im }()}, status: 500},
		{name: "bad host header", cfg: Config{ServerURL: nil}, host: "a${b}", path: "/boot/" + testMAC + ".ipxe", status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg.ServerURL == nil && tc.host == "" {
				cfg.ServerURL = mustURL(t, "http://198.18.0.1:8080/")
			}
			images := append([]fleet.Image{testImage()}, tc.images...)
			hosts := newFakeHosts(testHosts(), images)
			h, reg := newTestHandler(t, cfg, hosts, dirBlobs{t.TempDir()}, nil)
			srv := httptest.NewServer(h)
			defer srv.Close()

			resp, body := get(t, http.MethodGet, srv.URL+tc.path, tc.host)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body:\n%s", resp.StatusCode, tc.status, body)
			}
			if tc.golden != "" {
				golden(t, tc.golden, body)
				if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q, want no-store", cc)
				}
			}
			if got := len(hosts.issuedTokens()); got != tc.issued {
				t.Errorf("%d boot attempts issued, want %d", got, tc.issued)
			}
			if tc.kind != "" {
				if got := counterValue(t, reg, "kiln_httpboot_scripts_total", map[string]string{"kind": tc.kind}); got != 1 {
					t.Errorf("scripts_total{kind=%s} = %v, want 1", tc.kind, got)
				}
			}
			if tc.issued > 0 && !strings.Contains(body, "kiln.token="+hosts.issuedTokens()[0]+" ") {
				t.Errorf("script does not carry the issued token %s", hosts.issuedTokens()[0])
			}
			if tc.contract {
				checkContract(t, body, hosts.issuedTokens()[0])
			}
		})
	}
}

func withCmdline(im fleet.Image, c string) fleet.Image {
	im.Cmdline = c
	return im
}

var kernelLineRE = regexp.MustCompile(`(?m)^kernel --name vmlinuz (\S+) (.*?) \|\| `)

// checkContract parses the script's kernel command line with kiln-init's own
// parser (docs/boot-protocol.md §1) and checks it names the blobs served.
func checkContract(t *testing.T, script, token string) {
	t.Helper()
	m := kernelLineRE.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no kernel line in script:\n%s", script)
	}
	kernelURL, cmdline := m[1], m[2]
	c, err := bootagent.ParseCmdline(cmdline)
	if err != nil {
		t.Fatalf("kiln-init refuses the command line %q: %v", cmdline, err)
	}
	im := testImage()
	if c.Token != token || c.Host != "r1-n1" || c.Image != "testimage@2" || c.Digest != string(im.Rootfs.Digest) ||
		c.MAC.String() != testMAC || c.Size != im.Rootfs.Size {
		t.Errorf("kiln-init parsed %+v", c)
	}
	if want := c.Server.String() + "/blobs/sha256/" + im.Rootfs.Digest.Hex(); c.Rootfs.String() != want {
		t.Errorf("kiln.rootfs %s, want %s", c.Rootfs.String(), want)
	}
	if want := c.Server.String() + "/blobs/sha256/" + im.Kernel.Digest.Hex(); kernelURL != want {
		t.Errorf("kernel URL %s, want %s", kernelURL, want)
	}
	if !strings.HasPrefix(cmdline, "console=ttyS0 quiet ") || !strings.HasSuffix(cmdline, " initrd=initrd") {
		t.Errorf("cmdline %q: want the image's cmdline first and initrd=initrd last", cmdline)
	}
}

func TestScriptEachGetIssuesNewAttempt(t *testing.T) {
	hosts := newFakeHosts(testHosts(), []fleet.Image{testImage()})
	h, _ := newTestHandler(t, Config{ServerURL: mustURL(t, "http://198.18.0.1:8080")}, hosts, dirBlobs{t.TempDir()}, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, first := get(t, http.MethodGet, srv.URL+"/boot/"+testMAC+".ipxe", "")
	_, second := get(t, http.MethodGet, srv.URL+"/boot/"+testMAC+".ipxe", "")
	toks := hosts.issuedTokens()
	if len(toks) != 2 || toks[0] == toks[1] {
		t.Fatalf("issued %v, want two different tokens", toks)
	}
	if !strings.Contains(first, toks[0]) || !strings.Contains(second, toks[1]) {
		t.Errorf("scripts do not carry their own attempt's token")
	}
	// HEAD renders nothing and issues no attempt.
	resp, body := get(t, http.MethodHead, srv.URL+"/boot/"+testMAC+".ipxe", "")
	if resp.StatusCode != 200 || body != "" || len(hosts.issuedTokens()) != 2 {
		t.Errorf("HEAD: status %d, body %q, %d attempts; want 200, empty, 2", resp.StatusCode, body, len(hosts.issuedTokens()))
	}
}

func TestScriptStoreErrors(t *testing.T) {
	hosts := newFakeHosts(testHosts(), []fleet.Image{testImage()})
	hosts.imageErr = errors.New("bbolt: database not open")
	h, _ := newTestHandler(t, Config{ServerURL: mustURL(t, "http://198.18.0.1:8080")}, hosts, dirBlobs{t.TempDir()}, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, body := get(t, http.MethodGet, srv.URL+"/boot/"+testMAC+".ipxe", "")
	if resp.StatusCode != 500 || !strings.Contains(body, "exit 1") || len(hosts.issuedTokens()) != 0 {
		t.Errorf("status %d, body %q, %d attempts; want 500, an exit script, none", resp.StatusCode, body, len(hosts.issuedTokens()))
	}
}

func TestCheckCmdline(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"", true},
		{"console=ttyS0,115200n8 quiet root=live:x rd.foo=\"a b\"", true},
		{"a=b#c", true},
		{"quiet\n", false},
		{"quiet\r", false},
		{"a\tb", false},
		{"a=${x}", false},
		{"a && b", false},
		{"a ; b", false},
		{"a || b", false},
		{"#comment", false},
		{"a=\x7f", false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			err := checkCmdline(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("checkCmdline(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrUnsafeScript) {
				t.Errorf("error %v does not wrap ErrUnsafeScript", err)
			}
		})
	}
}
