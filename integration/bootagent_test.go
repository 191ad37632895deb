//go:build integration

package integration

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/immutableinfra/kiln/pkg/bootagent"
	"github.com/immutableinfra/kiln/pkg/testtool"
)

type bootagentMount struct {
	mountPoint, opts, fstype, source, superOpts string
}

// bootagentMountinfo parses a mountinfo file.
func bootagentMountinfo(t *testing.T, file string) []bootagentMount {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Errorf("open %s: %v", file, err)
		return nil
	}
	defer f.Close()
	var out []bootagentMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 6 || len(b) < 3 {
			continue
		}
		out = append(out, bootagentMount{mountPoint: a[4], opts: a[5], fstype: b[0], source: b[1], superOpts: b[2]})
	}
	return out
}

func bootagentFindMount(ms []bootagentMount, mp string) (bootagentMount, bool) {
	for i := len(ms) - 1; i >= 0; i-- { // last one wins (stacked mounts)
		if ms[i].mountPoint == mp {
			return ms[i], true
		}
	}
	return bootagentMount{}, false
}

// loopsFor lists loop devices whose backing file is path.
func bootagentLoopsFor(path string) []string {
	var out []string
	ents, _ := filepath.Glob("/sys/block/loop*")
	for _, e := range ents {
		dev := "/dev/" + filepath.Base(e)
		if bf := bootagent.LoopBackingFile(dev); bf == path || strings.TrimSuffix(bf, " (deleted)") == path {
			out = append(out, dev)
		}
	}
	return out
}

// inPrivateMountNS runs fn on a locked OS thread that has its own mount
// namespace. The thread is never unlocked, so it exits with the goroutine
// and its namespace (and every mount in it) goes away, even when fn fails
// half-way. fn must report with t.Error, not t.Fatal.
func bootagentPrivateMountNS(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // deliberately never unlocked
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			t.Errorf("unshare(CLONE_NEWNS): %v", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			t.Errorf("make / private: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// waitDetached polls until no loop device is backed by path (the kernel
// detaches autoclear devices asynchronously after the last unmount).
func bootagentWaitDetached(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(bootagentLoopsFor(path)) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("loop devices still attached to %s: %v", path, bootagentLoopsFor(path))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBootagentMountImage(t *testing.T) {
	mksquashfs := testtool.Need(t, "mksquashfs")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for name, content := range map[string]string{
		"etc/os-release": "NAME=kiln-test\n",
		"sbin/init":      "#!/bin/sh\nexec /bin/sh\n",
	} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	paths := bootagent.PathsUnder(filepath.Join(dir, "root"))
	if err := os.MkdirAll(paths.Kiln, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mksquashfs, src, paths.Rootfs, "-noappend", "-quiet", "-comp", "gzip").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	// Safety net should the namespace trick not clean up: detach what is ours.
	t.Cleanup(func() {
		for _, dev := range bootagentLoopsFor(paths.Rootfs) {
			_ = bootagent.DetachLoop(dev)
		}
	})

	var loopDev string
	bootagentPrivateMountNS(t, func() {
		sys := &bootagent.LinuxSystem{}
		if err := sys.MountImage(paths); err != nil {
			t.Errorf("MountImage: %v", err)
			return
		}
		defer func() {
			if err := bootagent.UnmountImage(paths); err != nil {
				t.Errorf("UnmountImage: %v", err)
			}
		}()
		ms := bootagentMountinfo(t, "/proc/thread-self/mountinfo")
		lower, ok := bootagentFindMount(ms, paths.Lower)
		if !ok || lower.fstype != "squashfs" || !strings.HasPrefix(lower.opts, "ro") || !strings.HasPrefix(lower.source, "/dev/loop") {
			t.Errorf("lower mount = %+v (found %v), want squashfs ro from /dev/loopN", lower, ok)
		}
		loopDev = lower.source
		if !bootagent.LoopReadOnly(loopDev) {
			t.Errorf("%s is not a read-only loop device", loopDev)
		}
		if bf := bootagent.LoopBackingFile(loopDev); bf != paths.Rootfs {
			t.Errorf("%s backing file %q, want %q", loopDev, bf, paths.Rootfs)
		}
		ov, ok := bootagentFindMount(ms, paths.NewRoot)
		if !ok || ov.fstype != "overlay" || !strings.Contains(ov.superOpts, "lowerdir="+paths.Lower) ||
			!strings.Contains(ov.superOpts, "upperdir="+filepath.Join(paths.RW, "upper")) {
			t.Errorf("overlay mount = %+v (found %v)", ov, ok)
		}
		if rw, ok := bootagentFindMount(ms, paths.RW); !ok || rw.fstype != "tmpfs" {
			t.Errorf("rw mount = %+v (found %v), want tmpfs", rw, ok)
		}

		// The image's files are visible through the overlay.
		if b, err := os.ReadFile(filepath.Join(paths.NewRoot, "etc/os-release")); err != nil || string(b) != "NAME=kiln-test\n" {
			t.Errorf("os-release through overlay = %q, %v", b, err)
		}
		if err := bootagent.CheckInit(paths.NewRoot, "/sbin/init"); err != nil {
			t.Errorf("CheckInit: %v", err)
		}
		// Writes land in the tmpfs upper, never in the lower.
		if err := os.WriteFile(filepath.Join(paths.NewRoot, "etc/os-release"), []byte("changed\n"), 0o644); err != nil {
			t.Errorf("write through overlay: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join(paths.RW, "upper/etc/os-release")); err != nil || string(b) != "changed\n" {
			t.Errorf("upper copy = %q, %v", b, err)
		}
		if b, _ := os.ReadFile(filepath.Join(paths.Lower, "etc/os-release")); string(b) != "NAME=kiln-test\n" {
			t.Errorf("lower changed: %q", b)
		}
		err := os.WriteFile(filepath.Join(paths.Lower, "new"), []byte("x"), 0o644)
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("write into lower: %v, want EROFS", err)
		}
		// The mounts are private to this thread's namespace.
		if _, ok := bootagentFindMount(bootagentMountinfo(t, "/proc/1/mountinfo"), paths.NewRoot); ok {
			t.Errorf("overlay visible in PID 1's mount namespace")
		}
	})
	if t.Failed() {
		return
	}
	if loopDev == "" {
		t.Fatal("no loop device seen")
	}
	bootagentWaitDetached(t, paths.Rootfs)
	for _, m := range bootagentMountinfo(t, "/proc/self/mountinfo") {
		if strings.HasPrefix(m.mountPoint, dir) {
			t.Errorf("mount left behind: %+v", m)
		}
	}
}

func TestBootagentMountImageGarbage(t *testing.T) {
	dir := t.TempDir()
	paths := bootagent.PathsUnder(dir)
	if err := os.MkdirAll(paths.Kiln, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(paths.Rootfs, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, dev := range bootagentLoopsFor(paths.Rootfs) {
			_ = bootagent.DetachLoop(dev)
		}
	})
	bootagentPrivateMountNS(t, func() {
		err := (&bootagent.LinuxSystem{}).MountImage(paths)
		if err == nil || !strings.Contains(err.Error(), "mount squashfs") {
			t.Errorf("MountImage(zeros) = %v, want a squashfs mount error", err)
		}
		if ms := bootagentMountinfo(t, "/proc/thread-self/mountinfo"); len(ms) > 0 {
			for _, m := range ms {
				if strings.HasPrefix(m.mountPoint, dir) {
					t.Errorf("mount left after failure: %+v", m)
				}
			}
		}
	})
	bootagentWaitDetached(t, paths.Rootfs)
}
