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
	raw, _ := os.ReadFile(img)

	// Stream the upload through a pipe that stalls half way, then SIGKILL.
	pr, pw := io.Pipe()
	cmd := exec.Command(filepath.Join(binDir, "kiln"), "image", "import", "crash@1", "--rootfs", "/dev/stdin")
	cmd.Env = append(os.Environ(), "KILN_SERVER=http://"+d.addr, "KILN_DATA_DIR="+dir)
	cmd.Stdin = pr
	cmd.Start()
	pw.Write(raw[:len(raw)/2])
	waitFor(t, "a temp file of the import", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "blobs", "tmp", "*"))
		return len(m) > 0
	})
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	pw.Close()
	cmd.Wait()

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
	img := squashfs(t, "graceful")
	raw, _ := os.ReadFile(img)

	pr, pw := io.Pipe()
	cmd := exec.Command(filepath.Join(binDir, "kiln"), "image", "import", "graceful@1", "--rootfs", "/dev/stdin")
	cmd.Env = append(os.Environ(), "KILN_SERVER=http://"+d.addr, "KILN_DATA_DIR="+dir)
	cmd.Stdin = pr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Write(raw[:len(raw)/2])
	waitFor(t, "the import to be under way", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "blobs", "tmp", "*"))
		return len(m) > 0
	})
	d.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond) // kilnd is shutting down now
	pw.Write(raw[len(raw)/2:])
	pw.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the import in flight at SIGTERM failed: %v\n%s", err, out.String())
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("kilnd did not exit cleanly after SIGTERM: %v\n%s", err, d.log)
	}
	d2 := startDaemon(t, dir)
	if list := d2.ok("image", "list"); !strings.Contains(list, "graceful@1") {
		t.Fatalf("image missing after restart: %s", list)
	}
}
