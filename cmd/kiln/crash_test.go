package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func startFailing(t *testing.T, dir string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kilnd"), "--data-dir", dir, "--api-listen", freeAddr(t))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	done := make(chan error, 1)
	cmd.Start()
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("second kilnd did not exit")
	}
	return result{code: cmd.ProcessState.ExitCode(), stderr: errb.String()}
}

// TestCrashDuringImport kills kilnd while an import is streaming: after a
// restart there is no manifest, no blob and no temp file of it.
func TestCrashDuringImport(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir)
	img := squashfs(t, "crash")
	imp := startStalledImport(t, d, "crash@1", img)
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	imp.pw.Close()
	imp.cmd.Wait()

	d2 := startDaemon(t, dir)
	if out := d2.ok("image", "list"); strings.Contains(out, "crash@1") {
		t.Fatalf("a manifest survived the crash: %s", out)
	}
	for _, g := range []string{"blobs/tmp/*", "blobs/sha256/*"} {
		if m, _ := filepath.Glob(filepath.Join(dir, g)); len(m) != 0 {
			t.Fatalf("files left after the crashed import: %v", m)
		}
	}
	// The same import then works.
	d2.ok("image", "import", "crash@1", "--rootfs", img)
}

// TestCrashDuringAssign kills kilnd while assignments stream in: after a
// restart every host's desired image is the To of its last history entry,
// and every entry's From is the previous entry's To.
func TestCrashDuringAssign(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir)
	d.ok("image", "import", "a@1", "--rootfs", squashfs(t, "1"))
	d.ok("image", "import", "a@2", "--rootfs", squashfs(t, "2"))
	const hosts = 60
	for i := range hosts {
		d.ok("host", "add", fmt.Sprintf("h%02d", i), "--mac", fmt.Sprintf("52:54:00:00:01:%02x", i), "--label", "rack=r1")
	}
	token, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		defer func() { done <- n }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			body := fmt.Sprintf(`{"selector":"rack=r1","ref":"a@%d"}`, i%2+1)
			req, _ := http.NewRequest("POST", "http://"+d.addr+"/api/v1/assign", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			resp.Body.Close()
			n++
		}
	}()
	time.Sleep(700 * time.Millisecond)
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	close(stop)
	if n := <-done; n < 2 {
		t.Fatalf("only %d assignments went through before the kill", n)
	}
	d2 := startDaemon(t, dir)
	for i := range hosts {
		name := fmt.Sprintf("h%02d", i)
		var h struct {
			Desired string `json:"desired_image"`
		}
		d2.json(&h, "host", "show", name)
		var hist []struct{ From, To string }
		d2.json(&hist, "history", name)
		if len(hist) == 0 || hist[len(hist)-1].To != h.Desired {
			t.Fatalf("%s: desired %q but history %v", name, h.Desired, hist)
		}
		for j := 1; j < len(hist); j++ {
			if hist[j].From != hist[j-1].To {
				t.Fatalf("%s: history broken at %d: %v", name, j, hist)
			}
		}
	}
}

// stalledImport is a `kiln image import` whose upload stopped half way.
type stalledImport struct {
	cmd  *exec.Cmd
	pw   *io.PipeWriter
	rest []byte
	out  *bytes.Buffer
}

// startStalledImport streams the first half of the image file to kilnd
// through a pipe and returns once kilnd is writing it to a temp file.
func startStalledImport(t *testing.T, d *daemon, ref, img string) stalledImport {
	t.Helper()
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	imp := stalledImport{cmd: exec.Command(filepath.Join(binDir, "kiln"), "image", "import", ref, "--rootfs", "/dev/stdin"),
		pw: pw, rest: raw[len(raw)/2:], out: &bytes.Buffer{}}
	imp.cmd.Env = append(os.Environ(), "KILN_SERVER=http://"+d.addr, "KILN_DATA_DIR="+d.dataDir)
	imp.cmd.Stdin = pr
	imp.cmd.Stdout, imp.cmd.Stderr = imp.out, imp.out
	if err := imp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Write(raw[:len(raw)/2])
	waitFor(t, "a temp file of the import", func() bool {
		m, _ := filepath.Glob(filepath.Join(d.dataDir, "blobs", "tmp", "*"))
		return len(m) > 0
	})
	return imp
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGracefulShutdownFinishesImport sends SIGTERM while an import is
// streaming: the request in flight completes, then kilnd exits 0 and the
// image is there after a restart.
func TestGracefulShutdownFinishesImport(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir)
	imp := startStalledImport(t, d, "graceful@1", squashfs(t, "graceful"))
	d.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond) // kilnd is shutting down now
	imp.pw.Write(imp.rest)
	imp.pw.Close()
	if err := imp.cmd.Wait(); err != nil {
		t.Fatalf("the import in flight at SIGTERM failed: %v\n%s", err, imp.out.String())
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("kilnd did not exit cleanly after SIGTERM: %v\n%s", err, d.log)
	}
	d2 := startDaemon(t, dir)
	if list := d2.ok("image", "list"); !strings.Contains(list, "graceful@1") {
		t.Fatalf("image missing after restart: %s", list)
	}
}
