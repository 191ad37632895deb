//go:build integration

// Integration tests: kilnd serving real PXE clients (QEMU with SeaBIOS+iPXE
// and OVMF) behind real BMCs (ipmi_sim) in private network namespaces. They
// need root; `make integration` (part of `make test`) runs them.
package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/integration/labkit"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

var binDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root (network namespaces, loop mounts, QEMU taps)")
		os.Exit(1)
	}
	os.Exit(run(m))
}

// run builds the binaries unless KILN_BIN names them, runs the tests and
// removes what it built (os.Exit would skip the deferred removal).
func run(m *testing.M) int {
	binDir = os.Getenv("KILN_BIN")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "kiln-it-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		for _, b := range []struct{ pkg, cgo string }{{"../cmd/kilnd", "1"}, {"../cmd/kiln", "1"}, {"../cmd/kiln-init", "0"}} {
			cmd := exec.Command("go", "build", "-o", dir+"/", b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b.pkg, err, out)
				return 1
			}
		}
		binDir = dir
	}
	abs, _ := filepath.Abs(binDir)
	binDir = abs
	return m.Run()
}

var images sync.Map // key -> *imageBuild

type imageBuild struct {
	once sync.Once
	path string
	err  error
}

// testImage builds (once per test binary) images/build/testimage-VERSION.squashfs.
func testImage(t *testing.T, version string, broken bool) string {
	t.Helper()
	key := fmt.Sprintf("%s-%v", version, broken)
	v, _ := images.LoadOrStore(key, &imageBuild{})
	b := v.(*imageBuild)
	b.once.Do(func() {
		args := []string{"-C", "../images", "testimage", "VERSION=" + version}
		if broken {
			args = append(args, "BROKEN=1")
		}
		out, err := exec.Command("make", args...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("make %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		b.path, b.err = filepath.Abs(filepath.Join("../images/build", "testimage-"+version+".squashfs"))
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// newLab starts a lab in its own namespace; on failure the test's log gets
// the tails of kilnd's log and every console.
func newLab(t *testing.T, name string, kilndArgs ...string) *labkit.Lab {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	lab, err := labkit.Start(ctx, labkit.Config{Name: name, Dir: dir, Bin: binDir, KilndArgs: kilndArgs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kilnd log (tail):\n%s", tailString(lab.Kilnd.Log(), 60))
			for _, h := range lab.Hosts {
				t.Logf("console of %s (tail):\n%s", h.Spec.Name, tailString(h.Console(), 40))
				t.Logf("power events of %s: %v", h.Spec.Name, h.PowerEvents())
			}
		}
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
		if labkit.NetnsExists(name) {
			t.Errorf("namespace %s still exists after cleanup", name)
		}
	})
	return lab
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kiln runs the CLI in the lab and fails the test on error.
func kiln(t *testing.T, lab *labkit.Lab, args ...string) string {
	t.Helper()
	out, _, err := lab.Kiln(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kilnJSON(t *testing.T, lab *labkit.Lab, v any, args ...string) {
	t.Helper()
	out := kiln(t, lab, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("kiln %v: %v\n%s", args, err, out)
	}
}

func host(t *testing.T, lab *labkit.Lab, name string) fleet.Host {
	t.Helper()
	var h fleet.Host
	kilnJSON(t, lab, &h, "host", "show", name)
	return h
}

// netbootHost adds a lab host from spec, registers it with kiln under all
// its MACs, assigns it ref and powers it on with a one-time network boot.
func netbootHost(t *testing.T, lab *labkit.Lab, spec labkit.HostSpec, ref string) *labkit.Host {
	t.Helper()
	h, err := lab.AddHost(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"host", "add", spec.Name}
	for _, m := range h.Spec.MACs {
		args = append(args, "--mac", m)
	}
	kiln(t, lab, args...)
	kiln(t, lab, "assign", spec.Name, ref)
	if err := h.PowerOn(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	return h
}

// waitReport waits until host's newest boot report for image ref is
// terminal and returns it.
func waitReport(t *testing.T, lab *labkit.Lab, name, ref string, timeout time.Duration) fleet.BootReport {
	t.Helper()
	return waitReportAfter(t, lab, name, ref, 0, timeout)
}

// waitReportAfter is waitReport for a boot attempt later than after.
func waitReportAfter(t *testing.T, lab *labkit.Lab, name, ref string, after uint64, timeout time.Duration) fleet.BootReport {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h := host(t, lab, name)
		if r := h.LastReport; r != nil && r.Image == ref && r.Attempt > after && fleet.Terminal(r.Phase) {
			return *r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not finish booting %s within %s (last report %+v)", name, ref, timeout, h.LastReport)
		}
		time.Sleep(2 * time.Second)
	}
}

// importImage imports a test image version and returns its manifest.
func importImage(t *testing.T, lab *labkit.Lab, ref, path string) fleet.Image {
	t.Helper()
	var res struct {
		Image fleet.Image `json:"image"`
	}
	kilnJSON(t, lab, &res, "image", "import", ref, "--rootfs", path, "--cmdline", "console=ttyS0")
	return res.Image
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
