package main

// End-to-end tests of the kiln and kilnd binaries: built once, kilnd run on
// loopback with a data dir in a temp folder, kiln run as a user would.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/testtool"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kiln-e2e-bin")
	if err != nil {
		panic(err)
	}
	out, err := exec.Command("go", "build", "-o", dir+"/", "../../cmd/kiln", "../../cmd/kilnd").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a kilnd process under test.
type daemon struct {
	t       *testing.T
	dataDir string
	addr    string
	cmd     *exec.Cmd
	log     *testtool.SyncBuffer
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startDaemon(t *testing.T, dataDir string, extra ...string) *daemon {
	t.Helper()
	kinit := filepath.Join(t.TempDir(), "kiln-init")
	os.WriteFile(kinit, []byte("\x7fELF fake kiln-init for tests"), 0o755)
	d := &daemon{t: t, dataDir: dataDir, addr: freeAddr(t), log: &testtool.SyncBuffer{}}
	args := append([]string{"--data-dir", dataDir, "--api-listen", d.addr, "--kiln-init", kinit, "--log-level", "debug"}, extra...)
	d.cmd = exec.Command(filepath.Join(binDir, "kilnd"), args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.kill() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + d.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("kilnd did not come up: %v\n%s", err, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) kill() {
	if d.cmd.ProcessState == nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		d.t.Fatalf("kilnd did not exit cleanly on SIGTERM: %v\n%s", err, d.log)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// kiln runs the CLI against d (token found through KILN_DATA_DIR, as on the
// daemon's own machine).
func (d *daemon) kiln(args ...string) result {
	d.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kiln"), args...)
	cmd.Env = append(os.Environ(), "KILN_SERVER=http://"+d.addr, "KILN_DATA_DIR="+d.dataDir, "KILN_TOKEN=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		d.t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func (d *daemon) ok(args ...string) string {
	d.t.Helper()
	r := d.kiln(args...)
	if r.code != 0 {
		d.t.Fatalf("kiln %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func (d *daemon) json(v any, args ...string) {
	d.t.Helper()
	out := d.ok(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		d.t.Fatalf("kiln %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

const kver = "6.1.0-99-test"

// squashfs makes a real bootable-looking image whose content depends on release.
func squashfs(t *testing.T, release string) string {
	t.Helper()
	mk := testtool.Need(t, "mksquashfs")
	dir := t.TempDir()
	files := map[string]string{
		"boot/vmlinuz-" + kver:                                    "KERNEL",
		"lib/modules/" + kver + "/modules.dep":                    "kernel/fs/squashfs/squashfs.ko:\n",
		"lib/modules/" + kver + "/kernel/fs/squashfs/squashfs.ko": "\x7fELF",
		"etc/kiln-release":                                        release,
		"var/filler":                                              strings.Repeat(release, 200000),
	}
	for p, c := range files {
		os.MkdirAll(filepath.Join(dir, "root", filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(dir, "root", p), []byte(c), 0o644)
	}
	out := filepath.Join(dir, "rootfs.squashfs")
	if b, err := exec.Command(mk, filepath.Join(dir, "root"), out, "-noappend", "-quiet", "-all-root", "-noI", "-noD", "-noF").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v %s", err, b)
	}
	return out
}
