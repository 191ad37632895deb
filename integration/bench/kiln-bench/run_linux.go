package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/immutableinfra/kiln/integration/labkit"
)

// Addresses of the veth pair of every section (inside its namespaces only).
const (
	serverIP = "198.18.0.1"
	clientIP = "198.18.0.2"
	subnet   = "198.18.0.0/15"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// runner holds what one run started, so that everything is torn down.
type runner struct {
	cfg  Config
	work string
	out  io.Writer
	res  *Results
	id   int // a short run id for namespace and interface names

	mu    sync.Mutex
	procs map[*proc]struct{}
	nss   map[string]struct{}
}

// run runs the selected sections and returns what they measured, also when
// one of them failed (its error is returned, the others still run).
func run(ctx context.Context, cfg Config, out io.Writer) (*Results, error) {
	res := NewResults()
	if os.Geteuid() != 0 {
		return res, errors.New("needs root (network namespaces)")
	}
	r := &runner{cfg: cfg, out: out, res: res, id: os.Getpid() % 10000, procs: map[*proc]struct{}{}, nss: map[string]struct{}{}}
	var err error
	if cfg.Work != "" {
		r.work, err = filepath.Abs(cfg.Work)
		if err == nil {
			err = os.MkdirAll(r.work, 0o755)
		}
	} else {
		r.work, err = os.MkdirTemp("", "kiln-bench-")
	}
	if err != nil {
		return res, fmt.Errorf("work dir: %w", err)
	}
	defer func() {
		r.cleanup()
		if !cfg.Keep && cfg.Work == "" {
			os.RemoveAll(r.work)
		} else {
			r.logf("logs kept in %s", r.work)
		}
	}()
	if err := os.MkdirAll(cfg.Cache, 0o755); err != nil {
		return res, fmt.Errorf("cache dir: %w", err)
	}
	sections := []struct {
		name string
		fn   func(context.Context) error
	}{{"dhcp", r.dhcp}, {"tftp", r.tftp}, {"http", r.http}, {"boot", r.boot}, {"control", r.control}}
	var errs []error
	for _, s := range sections {
		if !cfg.want(s.name) {
			continue
		}
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("%s: not run: %w", s.name, context.Cause(ctx)))
			continue
		}
		t0 := time.Now()
		r.logf("== %s", s.name)
		if err := s.fn(ctx); err != nil {
			r.logf("%s failed: %v", s.name, err)
			res.Note("%s: FAILED: %v", s.name, err)
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
		r.cleanup() // nothing of a section outlives it
		r.logf("== %s done in %s", s.name, time.Since(t0).Round(time.Second))
	}
	return res, errors.Join(errs...)
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.out, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// cleanup stops every process the runner started and deletes its
// namespaces (killing anything left inside them first).
func (r *runner) cleanup() {
	r.mu.Lock()
	procs := make([]*proc, 0, len(r.procs))
	for p := range r.procs {
		procs = append(procs, p)
	}
	nss := make([]string, 0, len(r.nss))
	for n := range r.nss {
		nss = append(nss, n)
	}
	r.mu.Unlock()
	for _, p := range procs {
		p.Stop()
	}
	for _, n := range nss {
		r.deleteNetns(n)
	}
}

// deleteNetns kills what is left in namespace n and deletes it.
func (r *runner) deleteNetns(n string) {
	for i := 0; i < 50; i++ {
		out, _ := exec.Command("ip", "netns", "pids", n).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, f := range pids {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("No such file")) {
		r.logf("ip netns del %s: %v: %s", n, err, bytes.TrimSpace(out))
		return
	}
	r.mu.Lock()
	delete(r.nss, n)
	r.mu.Unlock()
}

// pair is a server and a client namespace joined by a veth pair and
// nothing else.
type pair struct {
	srvNS, cliNS, srvIf, cliIf string
}

// newPair creates the namespaces of a section (tag: 1-4 lowercase letters).
func (r *runner) newPair(ctx context.Context, tag string) (pair, error) {
	p := pair{
		srvNS: fmt.Sprintf("kb-%s-s-%d", tag, r.id), cliNS: fmt.Sprintf("kb-%s-c-%d", tag, r.id),
		srvIf: fmt.Sprintf("kb%ss%d", tag, r.id), cliIf: fmt.Sprintf("kb%sc%d", tag, r.id),
	}
	r.deleteNetns(p.srvNS) // left over from a killed run with the same id
	r.deleteNetns(p.cliNS)
	// Recorded before they exist, so that cleanup removes what VethPair
	// got to make.
	r.mu.Lock()
	r.nss[p.srvNS], r.nss[p.cliNS] = struct{}{}, struct{}{}
	r.mu.Unlock()
	return p, labkit.VethPair(ctx, p.srvNS, p.cliNS, p.srvIf, p.cliIf, serverIP+"/15", clientIP+"/15")
}

// proc is a server process started inside a namespace.
type proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	r       *runner
	once    sync.Once
}

// start runs argv inside namespace ns (ip netns exec replaces itself with
// argv, so the process is the server itself) in its own process group,
// with its output in WORK/logs/NAME-N.log.
func (r *runner) start(ns, name string, env []string, argv ...string) (*proc, error) {
	if err := os.MkdirAll(filepath.Join(r.work, "logs"), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.CreateTemp(filepath.Join(r.work, "logs"), name+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{Name: name, LogPath: logf.Name(), cmd: cmd, done: make(chan struct{}), r: r}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	r.mu.Lock()
	r.procs[p] = struct{}{}
	r.mu.Unlock()
	return p, nil
}

// Pid is the server's process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after 10 s.
func (p *proc) Stop() {
	p.once.Do(func() {
		pg := p.cmd.Process.Pid
		syscall.Kill(-pg, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pg, syscall.SIGKILL)
			<-p.done
		}
		syscall.Kill(-pg, syscall.SIGKILL) // stragglers of the group
		p.r.mu.Lock()
		delete(p.r.procs, p)
		p.r.mu.Unlock()
	})
}

// Log returns the tail of the process's output.
func (p *proc) Log() string { return tailFile(p.LogPath, 30) }

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitListen waits (at most timeout, polling every 100 ms) until something
// listens in ns on proto ("tcp" or "udp") port.
func (r *runner) waitListen(ctx context.Context, p *proc, ns, proto string, port int, timeout time.Duration) error {
	flag := "-Htlnp"
	if proto == "udp" {
		flag = "-Hulnp"
	}
	deadline := time.Now().Add(timeout)
	for i := 0; i < 1000; i++ {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ss", flag, "sport", "= :"+strconv.Itoa(port)).Output()
		if len(bytes.TrimSpace(out)) > 0 {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited at start:\n%s", p.Name, p.Log())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s does not listen on %s/%d after %s:\n%s", p.Name, proto, port, timeout, p.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: listen wait loop bound reached", p.Name)
}

// client runs a client tool in namespace ns, bounded by timeout, and returns
// its stdout and stderr. On timeout or cancel the whole process group is
// killed.
func (r *runner) client(ctx context.Context, ns string, timeout time.Duration, argv ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: %w (bound %s)", argv[0], ctx.Err(), timeout)
	}
	return o.String(), e.String(), err
}

// cpuTicks is utime+stime of pid and all its descendants, in clock ticks.
func cpuTicks(pid int) (int64, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	children := map[int][]int{}
	ticks := map[int]int64{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		ppid, t, err := ParseProcStat(string(b))
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], p)
		ticks[p] = t
	}
	if _, ok := ticks[pid]; !ok {
		return 0, fmt.Errorf("process %d not found", pid)
	}
	var sum int64
	queue := []int{pid}
	for n := 0; len(queue) > 0 && n < 100000; n++ {
		p := queue[0]
		queue = queue[1:]
		sum += ticks[p]
		queue = append(queue, children[p]...)
	}
	return sum, nil
}

// cpuSeconds is cpuTicks in seconds (0 when the process is gone).
func cpuSeconds(pid int) float64 {
	t, err := cpuTicks(pid)
	if err != nil {
		return 0
	}
	return float64(t) / clockTicks
}

// startKilnd runs bin/kilnd in ns with a data dir and the given flags and
// waits for its /healthz.
func (r *runner) startKilnd(ctx context.Context, ns, dataDir string, args ...string) (*proc, error) {
	argv := append([]string{filepath.Join(r.cfg.Bin, "kilnd"), "--data-dir", dataDir, "--api-listen", serverIP + ":8080",
		"--kiln-init", filepath.Join(r.cfg.Bin, "kiln-init"), "--log-level", "warn"}, args...)
	p, err := r.start(ns, "kilnd", nil, argv...)
	if err != nil {
		return nil, err
	}
	if err := r.waitListen(ctx, p, ns, "tcp", 8080, 30*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// kiln runs the CLI in ns against the kilnd of dataDir.
func (r *runner) kiln(ctx context.Context, ns, dataDir string, timeout time.Duration, args ...string) (string, error) {
	argv := append([]string{"env", "KILN_SERVER=http://" + serverIP + ":8080", "KILN_DATA_DIR=" + dataDir, "KILN_TOKEN=",
		filepath.Join(r.cfg.Bin, "kiln")}, args...)
	out, errOut, err := r.client(ctx, ns, timeout, argv...)
	if err != nil {
		return out, fmt.Errorf("kiln %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut))
	}
	return out, nil
}

// need checks that the tools exist.
func need(tools ...string) error {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools: %s (integration/deps.sh bench installs them)", strings.Join(missing, " "))
	}
	return nil
}
