//go:build integration

package integration

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDiskFullImport imports an image onto a data dir that fills up half
// way (a 12 MiB tmpfs): the import fails saying the disk is full, and no
// partial blob, temp file or manifest is left behind.
func TestDiskFullImport(t *testing.T) {
	img := testImage(t, "1", false)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "kiln-it-full", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	kilnd := exec.Command(filepath.Join(binDir, "kilnd"), "--data-dir", dir, "--api-listen", addr, "--kiln-init", filepath.Join(binDir, "kiln-init"))
	var logb bytes.Buffer
	kilnd.Stdout, kilnd.Stderr = &logb, &logb
	if err := kilnd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kilnd.Process.Kill(); kilnd.Wait() })
	kiln := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir, "kiln"), args...)
		cmd.Env = append(os.Environ(), "KILN_SERVER=http://"+addr, "KILN_DATA_DIR="+dir, "KILN_TOKEN=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := kiln("image", "list"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kilnd did not start: %s", logb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := kiln("image", "import", "big@1", "--rootfs", img)
	if err == nil || !strings.Contains(out, "disk full") || !strings.Contains(out, "nothing was stored") {
		t.Fatalf("import onto a full disk: err %v, output:\n%s", err, out)
	}
	for _, g := range []string{"blobs/tmp/*", "blobs/sha256/*"} {
		if m, _ := filepath.Glob(filepath.Join(dir, g)); len(m) != 0 {
			t.Fatalf("left behind after the failed import: %v", m)
		}
	}
	if list, _ := kiln("image", "list", "-o", "json"); strings.TrimSpace(list) != "[]" {
		t.Fatalf("a manifest was recorded: %s", list)
	}
	t.Logf("kiln said: %s", strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]))
}
