package labkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config describes a lab.
type Config struct {
	// Name is the network namespace (a-z, 0-9, '-').
	Name string
	// Dir holds everything the lab writes: kilnd's data dir, host dirs, logs.
	Dir string
	// Bin holds kilnd, kiln and kiln-init.
	Bin string
	// KilndArgs are added to kilnd's command line.
	KilndArgs []string
}

// Lab is a running virtual rack.
type Lab struct {
	cfg   Config
	NS    *Netns
	Kilnd *Kilnd
	Hosts []*Host
}

// Start creates the namespace and starts kilnd in it, serving DHCP (a pool
// with discovery off), TFTP and HTTP on the bridge.
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	for _, b := range []string{"kilnd", "kiln", "kiln-init"} {
		if _, err := os.Stat(filepath.Join(cfg.Bin, b)); err != nil {
			return nil, fmt.Errorf("labkit: %w (run make build)", err)
		}
	}
	ns, err := CreateNetns(ctx, cfg.Name)
	if err != nil {
		return nil, err
	}
	l := &Lab{cfg: cfg, NS: ns}
	args := append([]string{"--interface", Bridge, "--api-listen", fmt.Sprintf("%s:%d", ServerIP, APIPort),
		"--dhcp-subnet", Subnet, "--dhcp-range", PoolRange, "--kiln-init", filepath.Join(cfg.Bin, "kiln-init"),
		"--bmc-timeout", "20s", "--log-level", "debug"}, cfg.KilndArgs...)
	l.Kilnd = &Kilnd{ns: ns, Bin: cfg.Bin, DataDir: filepath.Join(cfg.Dir, "kiln"), Args: args, LogPath: filepath.Join(cfg.Dir, "kilnd.log")}
	if err := l.Kilnd.Start(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// AddHost creates a host's taps, scripts and BMC (started, VM off).
func (l *Lab) AddHost(ctx context.Context, spec HostSpec) (*Host, error) {
	spec.Index = len(l.Hosts)
	if len(spec.MACs) == 0 {
		spec.MACs = []string{fmt.Sprintf("52:54:00:4b:00:%02x", spec.Index+1)}
	}
	h := &Host{Spec: spec, Dir: filepath.Join(l.cfg.Dir, "hosts", spec.Name), BMCPort: 9001 + spec.Index, ns: l.NS}
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		return nil, err
	}
	l.Hosts = append(l.Hosts, h)
	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	if err := h.startBMC(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// Kiln runs the kiln CLI inside the namespace against the lab's kilnd.
func (l *Lab) Kiln(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	cmd := l.NS.Command(ctx, filepath.Join(l.cfg.Bin, "kiln"), args...)
	cmd.Env = append(os.Environ(), "KILN_SERVER="+l.Kilnd.URL(), "KILN_DATA_DIR="+l.Kilnd.DataDir, "KILN_TOKEN=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("kiln %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), err
}

// Close stops every VM, BMC and kilnd and deletes the namespace. Safe to
// call more than once.
func (l *Lab) Close() error {
	for _, h := range l.Hosts {
		h.stop()
	}
	if l.Kilnd != nil {
		l.Kilnd.Kill()
	}
	// Processes started by chassis scripts: anything left in the namespace.
	killNetns(l.NS.Name)
	return l.NS.Delete()
}

// killNetns SIGKILLs every process still in namespace name.
func killNetns(name string) {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for range 50 {
		if out, _ := exec.Command("ip", "netns", "pids", name).Output(); len(bytes.TrimSpace(out)) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Down removes a lab that another process started (make lab-down): every
// process in the namespace, then the namespace. A lab that is not there is
// fine.
func Down(name string) error {
	if !NetnsExists(name) {
		return nil
	}
	killNetns(name)
	return (&Netns{Name: name}).Delete()
}

// Kilnd is kilnd running inside the lab namespace.
type Kilnd struct {
	ns      *Netns
	Bin     string
	DataDir string
	Args    []string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// URL is kilnd's API and boot URL inside the namespace.
func (k *Kilnd) URL() string { return fmt.Sprintf("http://%s:%d", ServerIP, APIPort) }

// Start runs kilnd (its output appended to LogPath) and waits until its
// /healthz answers.
func (k *Kilnd) Start(ctx context.Context) error {
	logf, err := os.OpenFile(k.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"--data-dir", k.DataDir}, k.Args...)
	k.cmd = k.ns.Command(context.Background(), filepath.Join(k.Bin, "kilnd"), args...)
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := k.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("labkit: start kilnd: %w", err)
	}
	k.done = make(chan struct{})
	go func() { k.cmd.Wait(); logf.Close(); close(k.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if k.ns.Command(ctx, "curl", "-sf", "-o", "/dev/null", "--max-time", "1", k.URL()+"/healthz").Run() == nil {
			return nil
		}
		select {
		case <-k.done:
			return fmt.Errorf("labkit: kilnd exited at start: %s", tail(k.LogPath, 20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("labkit: kilnd did not answer /healthz in 20s: %s", tail(k.LogPath, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill SIGKILLs kilnd (a crash) and waits for it to be gone.
func (k *Kilnd) Kill() {
	if k.cmd == nil || k.cmd.Process == nil {
		return
	}
	k.cmd.Process.Signal(syscall.SIGKILL)
	<-k.done
}

// Stop sends SIGTERM and waits for a clean exit.
func (k *Kilnd) Stop() error {
	if k.cmd == nil || k.cmd.Process == nil {
		return nil
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		k.Kill()
		return errors.New("labkit: kilnd did not stop within 30s of SIGTERM")
	}
	if code := k.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("labkit: kilnd exited %d on SIGTERM", code)
	}
	return nil
}

// Log returns kilnd's log so far.
func (k *Kilnd) Log() string {
	b, _ := os.ReadFile(k.LogPath)
	return string(b)
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
