package bootagent

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

var errBoom = errors.New("boom")

// fakeMachine implements ModuleLoader, Network, Downloader, Mounter,
// Switcher and PhaseReporter, records the calls and fails the step named
// in failAt.
type fakeMachine struct {
	t       *testing.T
	failAt  string
	blob    []byte // what Fetch writes
	noInit  bool
	noShell bool

	mu      sync.Mutex
	calls   []string
	reports []Report
	slept   time.Duration
}

func (f *fakeMachine) call(name string) error {
	f.mu.Lock()
	f.calls = append(f.calls, name)
	f.mu.Unlock()
	if f.failAt == name {
		return errBoom
	}
	return nil
}

func (f *fakeMachine) LoadModules(ctx context.Context) (int, error) {
	return 9, f.call("modules")
}

func (f *fakeMachine) Up(ctx context.Context, mac net.HardwareAddr) (Lease, error) {
	if mac.String() != "52:54:00:12:34:56" {
		f.t.Errorf("network up for MAC %s", mac)
	}
	return Lease{Interface: "ens3", Addr: netip.MustParsePrefix("198.18.0.10/15"), Gateway: netip.MustParseAddr("198.18.0.1")}, f.call("network")
}

func (f *fakeMachine) Fetch(ctx context.Context, url, dst string, size int64) (FetchResult, error) {
	if err := f.call("fetch"); err != nil {
		return FetchResult{}, err
	}
	if err := os.WriteFile(dst, f.blob, 0o600); err != nil {
		return FetchResult{}, err
	}
	_, d := digestOf(f.blob)
	return FetchResult{Bytes: int64(len(f.blob)), Digest: d, Duration: time.Second}, nil
}

func (f *fakeMachine) MountImage(p Paths) error {
	if err := f.call("mount"); err != nil {
		return err
	}
	// Pretend the overlay is up: the image's files appear in NewRoot.
	if err := os.MkdirAll(filepath.Join(p.NewRoot, "sbin"), 0o755); err != nil {
		return err
	}
	if f.noInit {
		return nil
	}
	return os.WriteFile(filepath.Join(p.NewRoot, "sbin/init"), []byte("#!/bin/sh\n"), 0o755)
}

func (f *fakeMachine) MountState(target string) (bool, error) {
	return true, f.call("state")
}

func (f *fakeMachine) SwitchRoot(p Paths, init string) error {
	if err := f.call("switch_root " + init); err != nil {
		return err
	}
	// A real switch_root does not return; stand in by panicking out of Run
	// is not possible, so the fake reports success by returning a sentinel.
	return errSwitched
}

var errSwitched = errors.New("switched (fake)")

func (f *fakeMachine) Reboot() error { return f.call("reboot") }

func (f *fakeMachine) Shell() error {
	if f.noShell {
		f.call("shell")
		return os.ErrNotExist
	}
	return f.call("shell")
}

func (f *fakeMachine) Send(ctx context.Context, r Report) error {
	f.mu.Lock()
	f.reports = append(f.reports, r)
	f.mu.Unlock()
	return nil
}

func digestOf(b []byte) ([]byte, string) {
	_, d := testBlobDigest(b)
	return b, d
}

func newTestAgent(t *testing.T, f *fakeMachine, cmdline string) (*Agent, *bytes.Buffer) {
	t.Helper()
	c, err := ParseCmdline(cmdline)
	if err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(t.TempDir(), "kiln-init")
	if err := os.WriteFile(self, []byte("ELF kiln-init"), 0o700); err != nil {
		t.Fatal(err)
	}
	var console bytes.Buffer
	return &Agent{
		Config: c, Paths: PathsUnder(t.TempDir()),
		Modules: f, Network: f, Fetcher: f, Mounter: f, Switcher: f, Reporter: f,
		Console: &console, Self: self,
		Sleep: func(ctx context.Context, d time.Duration) { f.mu.Lock(); f.slept += d; f.mu.Unlock() },
	}, &console
}

func TestAgentRun(t *testing.T) {
	blob := []byte("squashfs image bytes")
	_, goodDigest := testBlobDigest(blob)
	cmdline := strings.Replace(baseCmdline, testDigest, goodDigest, 1) + " kiln.reboot_delay=7s"
	okPhases := []string{fleet.PhaseNetwork, fleet.PhaseFetched, fleet.PhaseVerified, fleet.PhaseMounted, fleet.PhaseSwitching}
	tests := []struct {
		name       string
		failAt     string
		extra      string // appended to the cmdline
		blob       []byte
		noInit     bool
		noShell    bool
		wantCalls  []string
		wantPhases []string // reports before "failed" (or all, on success)
		wantReason string   // substring of the failed report; "" = no failed report
	}{
		{name: "success", wantCalls: []string{"modules", "network", "fetch", "mount", "switch_root /sbin/init"}, wantPhases: okPhases},
		{name: "success with state and custom init", extra: " kiln.state=/var/lib/kiln init=/sbin/init",
			wantCalls: []string{"modules", "network", "fetch", "mount", "state", "switch_root /sbin/init"}, wantPhases: okPhases},
		{name: "modules fail", failAt: "modules", wantCalls: []string{"modules", "reboot"}, wantReason: "load modules: boom"},
		{name: "network fails", failAt: "network", wantCalls: []string{"modules", "network", "reboot"}, wantReason: "network: boom"},
		{name: "fetch fails", failAt: "fetch", wantCalls: []string{"modules", "network", "fetch", "reboot"},
			wantPhases: []string{fleet.PhaseNetwork}, wantReason: "fetch debian-12@2026.11.26: boom"},
		{name: "digest mismatch", blob: []byte("tampered"), wantCalls: []string{"modules", "network", "fetch", "reboot"},
			wantPhases: []string{fleet.PhaseNetwork, fleet.PhaseFetched}, wantReason: "digest mismatch: expected " + goodDigest},
		{name: "mount fails", failAt: "mount", wantCalls: []string{"modules", "network", "fetch", "mount", "reboot"},
			wantPhases: []string{fleet.PhaseNetwork, fleet.PhaseFetched, fleet.PhaseVerified}, wantReason: "mount debian-12@2026.11.26: boom"},
		{name: "state mount fails", failAt: "state", extra: " kiln.state=/var/lib/kiln", wantCalls: []string{"modules", "network", "fetch", "mount", "state", "reboot"},
			wantPhases: []string{fleet.PhaseNetwork, fleet.PhaseFetched, fleet.PhaseVerified}, wantReason: "mount kiln-state at /var/lib/kiln: boom"},
		{name: "init missing", noInit: true, wantCalls: []string{"modules", "network", "fetch", "mount", "reboot"},
			wantPhases: []string{fleet.PhaseNetwork, fleet.PhaseFetched, fleet.PhaseVerified}, wantReason: "init /sbin/init not found in image debian-12@2026.11.26"},
		{name: "switch_root fails", failAt: "switch_root /sbin/init", wantCalls: []string{"modules", "network", "fetch", "mount", "switch_root /sbin/init", "reboot"},
			wantPhases: okPhases, wantReason: "boom"},
		{name: "debug runs the shell", failAt: "network", extra: " kiln.debug", wantCalls: []string{"modules", "network", "shell"}, wantReason: "network: boom"},
		{name: "debug without shell reboots", failAt: "network", extra: " kiln.debug", noShell: true, wantCalls: []string{"modules", "network", "shell", "reboot"}, wantReason: "network: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeMachine{t: t, failAt: tt.failAt, blob: blob, noInit: tt.noInit, noShell: tt.noShell}
			if tt.blob != nil {
				f.blob = tt.blob
			}
			a, console := newTestAgent(t, f, cmdline+tt.extra)
			err := a.Run(context.Background())
			// A successful fake switch_root returns errSwitched, which Run
			// treats like any failure; the fake's Shell "execs" (returns nil).
			calls := f.calls
			if tt.name == "debug runs the shell" {
				// Shell returned nil (a real exec does not return); Run still
				// falls through to the reboot, which is what happens when the
				// shell exits.
				calls = slices.DeleteFunc(slices.Clone(calls), func(s string) bool { return s == "reboot" })
			}
			if tt.wantReason == "" {
				if !errors.Is(err, errSwitched) {
					t.Fatalf("Run = %v, want the fake switch_root", err)
				}
				calls = slices.DeleteFunc(slices.Clone(calls), func(s string) bool { return s == "reboot" })
			}
			if !slices.Equal(calls, tt.wantCalls) {
				t.Errorf("calls = %v, want %v", calls, tt.wantCalls)
			}
			var phases []string
			var failed *Report
			for i, r := range f.reports {
				if r.Digest != a.Config.Digest {
					t.Errorf("report %s digest %q, want %q", r.Phase, r.Digest, a.Config.Digest)
				}
				if r.Phase == fleet.PhaseFailed {
					failed = &f.reports[i]
					if i != len(f.reports)-1 {
						t.Errorf("reports after failed: %+v", f.reports[i+1:])
					}
					continue
				}
				phases = append(phases, r.Phase)
			}
			if tt.wantReason == "" {
				if !slices.Equal(phases, tt.wantPhases) {
					t.Errorf("phases = %v, want %v", phases, tt.wantPhases)
				}
				bi, err := ReadBootInfo(a.Paths.BootJSON)
				if err != nil || bi != BootInfoFor(a.Config) {
					t.Errorf("boot.json = %+v, %v", bi, err)
				}
				st, err := os.Stat(filepath.Join(a.Paths.Bin, "kiln-init"))
				if err != nil || st.Mode().Perm() != 0o755 {
					t.Errorf("kiln-init copy: %v, %v", st, err)
				}
				for _, want := range []string{"kiln-init: fetched 0.0 MiB in 1s", "kiln-init: network ens3 198.18.0.10/15 via 198.18.0.1 in "} {
					if !strings.Contains(console.String(), want) {
						t.Errorf("console lacks %q:\n%s", want, console)
					}
				}
				return
			}
			if !slices.Equal(phases, tt.wantPhases) {
				t.Errorf("phases before failed = %v, want %v", phases, tt.wantPhases)
			}
			if failed == nil {
				t.Fatalf("no failed report; reports %+v", f.reports)
			}
			if !strings.Contains(failed.Message, tt.wantReason) {
				t.Errorf("failed message %q, want %q", failed.Message, tt.wantReason)
			}
			if !strings.Contains(console.String(), "kiln-init: FAILED: "+failed.Message) {
				t.Errorf("console lacks the reason:\n%s", console)
			}
			if slices.Contains(tt.wantCalls, "reboot") && f.slept != 7*time.Second {
				t.Errorf("waited %s before reboot, want 7s", f.slept)
			}
			if err == nil {
				t.Error("Run returned nil after a failure")
			}
		})
	}
}

func TestCheckInit(t *testing.T) {
	root := t.TempDir()
	mk := func(p string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
	}
	ln := func(target, p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("lib/systemd/systemd", 0o755)
	ln("/lib/systemd/systemd", "sbin/init")      // absolute: must resolve inside root
	ln("../lib/systemd/systemd", "bin/init-rel") // relative
	ln("/etc/passwd", "sbin/escapes")            // exists on the host, not in root
	mk("etc/motd", 0o644)                        // not executable
	ln("loop2", "sbin/loop1")
	ln("loop1", "sbin/loop2")
	ln("usr/bin", "bin2") // dir symlink in the middle of the path
	mk("usr/bin/busybox", 0o755)
	tests := []struct {
		init string
		ok   bool
	}{
		{"/sbin/init", true},
		{"/bin/init-rel", true},
		{"/bin2/busybox", true},
		{"/sbin/escapes", false},
		{"/etc/motd", false},
		{"/sbin/loop1", false},
		{"/sbin/nothing", false},
		{"/../../lib/systemd/systemd", true},
	}
	for _, tt := range tests {
		t.Run(tt.init, func(t *testing.T) {
			err := CheckInit(root, tt.init)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckInit(%s) = %v, want ok=%v", tt.init, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInitNotFound) {
				t.Errorf("err %v does not wrap ErrInitNotFound", err)
			}
		})
	}
}
