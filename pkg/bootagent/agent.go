package bootagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// ErrInitNotFound is returned (wrapped) when the image has no init at the
// configured path.
var ErrInitNotFound = errors.New("init not found")

// Paths is where kiln-init keeps its files (docs/boot-protocol.md §3).
type Paths struct {
	// Run is the tmpfs mounted first; everything else lives below it.
	Run string
	// Kiln is Run/kiln.
	Kiln string
	// Rootfs is the downloaded squashfs.
	Rootfs string
	// Lower is the squashfs mount point (read-only overlay lower layer).
	Lower string
	// RW is the tmpfs holding the overlay's upper and work directories.
	RW string
	// BootJSON is the boot identity file.
	BootJSON string
	// Bin is the directory the kiln-init copy is placed in.
	Bin string
	// NewRoot is the overlay mount point that becomes "/".
	NewRoot string
}

// PathsUnder returns the protocol's layout below root: PathsUnder("/") is
// /run, /run/kiln/..., /newroot. Tests use a temporary root.
func PathsUnder(root string) Paths {
	run := filepath.Join(root, "run")
	kiln := filepath.Join(run, "kiln")
	return Paths{
		Run:      run,
		Kiln:     kiln,
		Rootfs:   filepath.Join(kiln, "rootfs.squashfs"),
		Lower:    filepath.Join(kiln, "lower"),
		RW:       filepath.Join(kiln, "rw"),
		BootJSON: filepath.Join(kiln, "boot.json"),
		Bin:      filepath.Join(kiln, "bin"),
		NewRoot:  filepath.Join(root, "newroot"),
	}
}

// Lease is the network configuration the boot NIC got.
type Lease struct {
	// Interface is the NIC's name, e.g. "ens3".
	Interface string
	// Addr is the address with its prefix length.
	Addr netip.Prefix
	// Gateway is the default router; the zero Addr when DHCP gave none.
	Gateway netip.Addr
}

// String renders "ens3 198.18.0.10/15 via 198.18.0.1".
func (l Lease) String() string {
	s := l.Interface + " " + l.Addr.String()
	if l.Gateway.IsValid() {
		s += " via " + l.Gateway.String()
	}
	return s
}

// ModuleLoader loads the kernel modules the initramfs carries. Agent calls
// it once, first.
type ModuleLoader interface {
	// LoadModules loads every module and returns how many it loaded
	// (already loaded or built in counts as loaded).
	LoadModules(ctx context.Context) (int, error)
}

// Network brings up the boot NIC. Agent calls it once, after the modules.
type Network interface {
	// Up waits for the NIC with this MAC, brings it and lo up, runs DHCP and
	// configures the address and default route.
	Up(ctx context.Context, mac net.HardwareAddr) (Lease, error)
}

// Downloader fetches the rootfs into a file; *Fetcher implements it.
type Downloader interface {
	Fetch(ctx context.Context, url, dst string, size int64) (FetchResult, error)
}

// Mounter assembles the new root. Agent calls MountImage once, after the
// digest was verified, and MountState at most once after that.
type Mounter interface {
	// MountImage attaches p.Rootfs to a read-only loop device, mounts it at
	// p.Lower, a tmpfs at p.RW and the overlay at p.NewRoot.
	MountImage(p Paths) error
	// MountState mounts the filesystem labelled kiln-state at target (a
	// path inside the new root). found is false, with a nil error, when
	// there is no such filesystem.
	MountState(target string) (found bool, err error)
}

// Switcher leaves the initramfs. SwitchRoot is called once, last; Reboot
// and Shell only after a failure.
type Switcher interface {
	// SwitchRoot moves /proc, /sys, /dev and /run into p.NewRoot, makes it
	// "/" and executes init; it returns only on failure.
	SwitchRoot(p Paths, init string) error
	// Reboot restarts the machine; it returns only on failure.
	Reboot() error
	// Shell executes /bin/sh for debugging. It returns an error wrapping
	// fs.ErrNotExist when there is no shell.
	Shell() error
}

// PhaseReporter delivers a boot report; *Reporter implements it.
type PhaseReporter interface {
	Send(ctx context.Context, r Report) error
}

// Agent is the boot sequence of kiln-init. Every field but Console, Logger,
// Self and Sleep is required.
type Agent struct {
	Config   Config
	Paths    Paths
	Modules  ModuleLoader
	Network  Network
	Fetcher  Downloader
	Mounter  Mounter
	Switcher Switcher
	Reporter PhaseReporter
	// Console receives one line per phase with its duration; nil discards.
	Console io.Writer
	// Logger gets details; nil discards.
	Logger *slog.Logger
	// Self is the kiln-init binary copied to Paths.Bin; "" means
	// /proc/self/exe.
	Self string
	// Sleep waits before the reboot after a failure; nil means a timer that
	// ends early when ctx is done.
	Sleep func(ctx context.Context, d time.Duration)
}

// Run boots: modules, network, fetch, verify, mount, boot.json, switch_root.
// Each phase is reported as it completes. On a failure it reports `failed`
// with the reason, prints it, and then (kiln.debug) runs a shell or waits
// Config.RebootDelay and reboots. Run returns only when all of that did not
// take the machine away; the returned error is the boot failure.
func (a *Agent) Run(ctx context.Context) error {
	err := a.boot(ctx)
	if err == nil {
		err = errors.New("switch_root returned")
	}
	a.fail(ctx, err)
	return err
}

func (a *Agent) console(format string, args ...any) {
	if a.Console != nil {
		fmt.Fprintf(a.Console, "kiln-init: "+format+"\n", args...)
	}
}

func (a *Agent) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

func (a *Agent) report(ctx context.Context, phase, msg string) {
	if err := a.Reporter.Send(ctx, Report{Phase: phase, Digest: a.Config.Digest, Message: msg}); err != nil {
		a.log().Warn("boot report not delivered", "phase", phase, "err", err)
		a.console("report %s not delivered: %v", phase, err)
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

func (a *Agent) boot(ctx context.Context) error {
	c := a.Config
	a.console("booting %s (%s) as %s", c.Image, c.Digest, c.Host)

	t := time.Now()
	n, err := a.Modules.LoadModules(ctx)
	if err != nil {
		return fmt.Errorf("load modules: %w", err)
	}
	a.console("loaded %d modules in %s", n, since(t))

	t = time.Now()
	lease, err := a.Network.Up(ctx, c.MAC)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	a.console("network %s in %s", lease, since(t))
	a.report(ctx, fleet.PhaseNetwork, lease.String())

	if err := os.MkdirAll(filepath.Dir(a.Paths.Rootfs), 0o755); err != nil {
		return fmt.Errorf("fetch %s: %w", c.Image, err)
	}
	res, err := a.Fetcher.Fetch(ctx, c.Rootfs.String(), a.Paths.Rootfs, c.Size)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", c.Image, err)
	}
	a.console("fetched %s", res.Summary())
	a.report(ctx, fleet.PhaseFetched, res.Summary())

	if err := VerifyDigest(c.Digest, res.Digest); err != nil {
		return err
	}
	a.console("verified %s", res.Digest)
	a.report(ctx, fleet.PhaseVerified, "")

	t = time.Now()
	if err := a.Mounter.MountImage(a.Paths); err != nil {
		return fmt.Errorf("mount %s: %w", c.Image, err)
	}
	if c.StatePath != "" {
		target := filepath.Join(a.Paths.NewRoot, c.StatePath)
		found, err := a.Mounter.MountState(target)
		switch {
		case err != nil:
			return fmt.Errorf("mount kiln-state at %s: %w", c.StatePath, err)
		case found:
			a.console("mounted kiln-state at %s", c.StatePath)
		default:
			a.console("no kiln-state filesystem; %s stays on the overlay", c.StatePath)
		}
	}
	if err := WriteBootInfo(a.Paths.BootJSON, BootInfoFor(c)); err != nil {
		return err
	}
	if err := a.copySelf(); err != nil {
		return err
	}
	if err := CheckInit(a.Paths.NewRoot, c.Init); err != nil {
		a.log().Error("init check", "init", c.Init, "err", err)
		return &initError{init: c.Init, image: c.Image}
	}
	a.console("mounted in %s", since(t))
	a.report(ctx, fleet.PhaseMounted, "")

	a.console("switching to %s", c.Init)
	a.report(ctx, fleet.PhaseSwitching, c.Init)
	return a.Switcher.SwitchRoot(a.Paths, c.Init)
}

func (a *Agent) copySelf() error {
	self := a.Self
	if self == "" {
		self = "/proc/self/exe"
	}
	if err := copyFile(self, filepath.Join(a.Paths.Bin, "kiln-init"), 0o755); err != nil {
		return fmt.Errorf("copy kiln-init: %w", err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(mode); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (a *Agent) fail(ctx context.Context, err error) {
	reason := err.Error()
	a.console("FAILED: %s", reason)
	a.log().Error("boot failed", "err", err)
	a.report(ctx, fleet.PhaseFailed, reason)
	if a.Config.Debug {
		a.console("kiln.debug: starting /bin/sh")
		if serr := a.Switcher.Shell(); serr != nil {
			a.console("no shell: %v", serr)
		}
	}
	a.console("rebooting in %s", a.Config.RebootDelay)
	sleep := a.Sleep
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}
	sleep(ctx, a.Config.RebootDelay)
	if rerr := a.Switcher.Reboot(); rerr != nil {
		a.console("reboot: %v", rerr)
	}
}

// initError is the boot failure for an image without its init; its message
// is what the failed report carries.
type initError struct{ init, image string }

func (e *initError) Error() string {
	return fmt.Sprintf("init %s not found in image %s", e.init, e.image)
}

func (e *initError) Unwrap() error { return ErrInitNotFound }

// CheckInit reports whether init (an absolute path inside the image) names
// an executable regular file inside root, following symbolic links as the
// image will see them (absolute targets resolve against root, not "/").
// The error wraps ErrInitNotFound.
func CheckInit(root, init string) error {
	p, err := resolveInRoot(root, init)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInitNotFound, err)
	}
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInitNotFound, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%w: %s is not an executable file", ErrInitNotFound, init)
	}
	return nil
}

// resolveInRoot resolves name (absolute, inside root) to a host path,
// following symlinks with root as "/".
func resolveInRoot(root, name string) (string, error) {
	todo := strings.Split(strings.TrimPrefix(path.Clean("/"+name), "/"), "/")
	cur := "/"
	for hops := 0; len(todo) > 0; {
		elem := todo[0]
		todo = todo[1:]
		if elem == "" || elem == "." {
			continue
		}
		if elem == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, elem)
		host := filepath.Join(root, next)
		st, err := os.Lstat(host)
		if err != nil {
			return "", err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", name)
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return filepath.Join(root, cur), nil
}
