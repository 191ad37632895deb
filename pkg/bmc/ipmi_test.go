package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/testtool"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const ipmiPassword = "ipmi-S3cret-pw"

// chassisScript is ipmi_sim's chassis_control program: ipmi_sim runs it as
// "PROG DEVICE get power|boot" and "PROG DEVICE set power 0|1 reset 1 boot
// pxe|default|none". It keeps power and the next boot device in files next
// to itself and logs every "set" to calls.log.
const chassisScript = `#!/bin/sh
PATH=/usr/bin:/bin
d=$(dirname "$0")
shift
cmd=$1; shift
if [ "$cmd" = get ]; then
  for k in "$@"; do
    case $k in
      power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)";;
      boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo default)";;
    esac
  done
  exit 0
fi
echo "set $*" >> "$d/calls.log"
while [ $# -ge 2 ]; do
  case $1 in
    power) echo "$2" > "$d/power";;
    boot) echo "$2" > "$d/boot";;
  esac
  shift 2
done
`

// ipmitoolWrapper runs the real ipmitool and counts, with flock, how many
// ipmitool processes (each is one RMCP+ session) run at once per BMC port
// and overall, keeping the maxima in files. bmclib runs ipmitool with an
// environment holding only IPMITOOL_PASSWORD, hence the absolute paths.
const ipmitoolWrapper = `#!/bin/sh
PATH=/usr/bin:/bin
D=%q
REAL=%q
port=623
prev=
for a in "$@"; do
  [ "$prev" = -p ] && port=$a
  prev=$a
done
bump() { # file delta
  flock "$D/lock" sh -c '
    n=$(( $(cat "$1" 2>/dev/null || echo 0) + $2 )); echo $n > "$1"
    m=$(cat "$1.max" 2>/dev/null || echo 0); [ $n -gt $m ] && echo $n > "$1.max"; true' sh "$1" "$2"
}
bump "$D/all" 1; bump "$D/port-$port" 1
"$REAL" "$@"; rc=$?
bump "$D/port-$port" -1; bump "$D/all" -1
exit $rc
`

// sim is one ipmi_sim BMC on 127.0.0.1.
type sim struct {
	dir  string
	port int
	cmd  *exec.Cmd
}

func (s *sim) url() string { return "ipmi://admin@127.0.0.1:" + strconv.Itoa(s.port) }

func (s *sim) target(host, password string) Target {
	return Target{Host: host, URL: s.url(), Password: password}
}

func (s *sim) file(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, name))
	return strings.TrimSpace(string(b))
}

func (s *sim) setPower(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return os.WriteFile(filepath.Join(s.dir, "power"), []byte(v+"\n"), 0o644)
}

// stop kills ipmi_sim (idempotent).
func (s *sim) stop() {
	if s.cmd.Process != nil && s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// startSim starts ipmi_sim with a chassis_control script, admin/ipmiPassword
// as user 2, on a fresh port; it is killed when the test ends.
func startSim(t testing.TB) *sim {
	t.Helper()
	bin := testtool.Need(t, "ipmi_sim")
	testtool.Need(t, "ipmitool")
	dir := t.TempDir()
	s := &sim{dir: dir}
	script := filepath.Join(dir, "chassis.sh")
	if err := os.WriteFile(script, []byte(chassisScript), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	emu := "mc_setbmc 0x20\n" +
		"mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n" +
		"sel_enable 0x20 1000 0x0a\n" +
		"mc_enable 0x20\n"
	if err := os.WriteFile(filepath.Join(dir, "cmds.emu"), []byte(emu), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		s.port = freeUDPPort(t)
		lan := fmt.Sprintf(`name "kilntest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "admin" "%s" admin 10 none md2 md5 straight
`, s.port, script, ipmiPassword)
		if err := os.WriteFile(filepath.Join(dir, "lan.conf"), []byte(lan), 0o644); err != nil {
			t.Fatal(err)
		}
		s.cmd = exec.Command(bin, "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "cmds.emu"), "-s", filepath.Join(dir, "state"), "-n")
		s.cmd.Dir = dir
		out, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
		if err != nil {
			t.Fatal(err)
		}
		s.cmd.Stdout, s.cmd.Stderr = out, out
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.stop(); out.Close() })
		if waitBound(s.port, 5*time.Second) {
			return s
		}
		s.stop()
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "ipmi_sim.log"))
			t.Fatalf("ipmi_sim did not bind 127.0.0.1:%d:\n%s", s.port, log)
		}
	}
}

// waitBound waits until something listens on the UDP port.
func waitBound(port int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		pc, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return true
		}
		pc.Close()
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// sessionCounter installs the ipmitool wrapper and reads its maxima.
type sessionCounter struct{ dir string }

func newSessionCounter(t *testing.T) (*sessionCounter, string) {
	t.Helper()
	real := testtool.Need(t, "ipmitool")
	testtool.Need(t, "flock")
	dir := t.TempDir()
	path := filepath.Join(dir, "ipmitool")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(ipmitoolWrapper, dir, real)), 0o755); err != nil {
		t.Fatal(err)
	}
	return &sessionCounter{dir: dir}, path
}

func (c *sessionCounter) max(name string) int {
	b, _ := os.ReadFile(filepath.Join(c.dir, name+".max"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func TestIPMIPowerAndBoot(t *testing.T) {
	s := startSim(t)
	m, logs, _ := newTestManager(t, Config{Timeout: 10 * time.Second, PowerPollInterval: 50 * time.Millisecond})
	tg := s.target("r9-n1", ipmiPassword)
	ctx := context.Background()

	timed := func(name string, f func() error) {
		t.Helper()
		start := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s against ipmi_sim took %v", name, time.Since(start).Round(time.Millisecond))
	}
	wantState := func(want PowerState) {
		t.Helper()
		var st PowerState
		timed("PowerState", func() (err error) { st, err = m.PowerState(ctx, tg); return err })
		if st != want {
			t.Fatalf("PowerState = %q, want %q", st, want)
		}
	}

	wantState(PowerOff)
	timed("SetPower(on)", func() error { return m.SetPower(ctx, tg, ActionOn) })
	if got := s.file("power"); got != "1" {
		t.Fatalf("chassis power after on = %q, want 1", got)
	}
	wantState(PowerOn)

	before := s.file("calls.log")
	timed("SetPower(on) when on", func() error { return m.SetPower(ctx, tg, ActionOn) })
	if after := s.file("calls.log"); after != before {
		t.Errorf("power on of a host that is on sent commands: %q", strings.TrimPrefix(after, before))
	}

	for _, tc := range []struct {
		mode BootMode
		name string
	}{{BootUEFI, "uefi"}, {BootLegacy, "legacy"}, {BootAuto, "auto"}} {
		if err := os.WriteFile(filepath.Join(s.dir, "boot"), []byte("default\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		timed("SetNextBoot(pxe, "+tc.name+")", func() error { return m.SetNextBoot(ctx, tg, BootPXE, tc.mode) })
		if got := s.file("boot"); got != "pxe" {
			t.Fatalf("next boot device after SetNextBoot(pxe, %s) = %q, want pxe", tc.name, got)
		}
	}

	timed("SetPower(off)", func() error { return m.SetPower(ctx, tg, ActionOff) })
	if got := s.file("power"); got != "0" {
		t.Fatalf("chassis power after off = %q, want 0", got)
	}
	wantState(PowerOff)

	// cycle on a host that is off powers it on (no off first).
	mark := s.file("calls.log")
	timed("SetPower(cycle) when off", func() error { return m.SetPower(ctx, tg, ActionCycle) })
	if got := strings.TrimSpace(strings.TrimPrefix(s.file("calls.log"), mark)); got != "set power 1" {
		t.Errorf("cycle of a host that is off sent %q, want just \"set power 1\"", got)
	}

	// cycle on a host that is on: ipmi_sim sets power 0, then power 1 a
	// second later.
	mark = s.file("calls.log")
	timed("SetPower(cycle) when on", func() error { return m.SetPower(ctx, tg, ActionCycle) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := strings.Fields(strings.ReplaceAll(strings.TrimPrefix(s.file("calls.log"), mark), "\n", "|"))
		seq := strings.Join(got, " ")
		if strings.Contains(seq, "set power 0|set power 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cycle: chassis calls %q, want set power 0 then set power 1", seq)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(logs.String(), ipmiPassword) {
		t.Errorf("logs contain the password")
	}
	if n := testutil.ToFloat64(m.metrics.ops.WithLabelValues("ipmi", "next_boot", "success")); n != 3 {
		t.Errorf("operations_total{ipmi,next_boot,success} = %v, want 3", n)
	}
}

func TestIPMIWrongPassword(t *testing.T) {
	s := startSim(t)
	m, logs, _ := newTestManager(t, Config{Timeout: 10 * time.Second, Backoff: time.Millisecond})
	const wrong = "n0t-the-Passw0rd"
	tg := s.target("r9-n2", wrong)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"status", func() error { _, err := m.PowerState(context.Background(), tg); return err }},
		{"on", func() error { return m.SetPower(context.Background(), tg, ActionOn) }},
		{"next boot", func() error { return m.SetNextBoot(context.Background(), tg, BootPXE, BootUEFI) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("err = %v, want ErrAuth", err)
			}
			if strings.Contains(err.Error(), wrong) {
				t.Errorf("error contains the password: %v", err)
			}
			want := fmt.Sprintf("bmc: host r9-n2 (ipmi 127.0.0.1:%d): ", s.port)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
		})
	}
	if s.file("calls.log") != "" || s.file("power") != "" {
		t.Errorf("a refused session changed the chassis: %q", s.file("calls.log"))
	}
	if n := testutil.ToFloat64(m.metrics.retries.WithLabelValues("ipmi", "power_status")); n != 0 {
		t.Errorf("auth failure was retried %v times", n)
	}
	if strings.Contains(logs.String(), wrong) {
		t.Errorf("logs contain the password:\n%s", logs)
	}
}

func TestIPMIStoppedBMCTimesOut(t *testing.T) {
	s := startSim(t)
	s.stop()
	const timeout = 1500 * time.Millisecond
	tests := []struct {
		name      string
		retries   int
		wantTries float64
	}{
		{"no retries", -1, 0},
		{"one retry", 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _, _ := newTestManager(t, Config{Timeout: timeout, Retries: tc.retries, Backoff: 10 * time.Millisecond})
			start := time.Now()
			_, err := m.PowerState(context.Background(), s.target("r9-n3", ipmiPassword))
			took := time.Since(start)
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want ErrTimeout and context.DeadlineExceeded", err)
			}
			// Each attempt is bounded by Timeout (plus process teardown).
			attempts := time.Duration(tc.wantTries + 1)
			if limit := attempts*timeout + 3*time.Second; took > limit {
				t.Errorf("took %v, want at most %v for %d attempt(s)", took, limit, attempts)
			}
			if took < attempts*timeout {
				t.Errorf("took %v, less than %d x Timeout: not every attempt waited for the BMC", took, attempts)
			}
			if n := testutil.ToFloat64(m.metrics.retries.WithLabelValues("ipmi", "power_status")); n != tc.wantTries {
				t.Errorf("retries = %v, want %v", n, tc.wantTries)
			}
			if n := testutil.ToFloat64(m.metrics.ops.WithLabelValues("ipmi", "power_status", "timeout")); n != 1 {
				t.Errorf("operations_total{outcome=timeout} = %v, want 1", n)
			}
			t.Logf("stopped BMC: %v after %v", err, took.Round(time.Millisecond))
		})
	}
}

func TestIPMIOneSessionPerBMCAndGlobalLimit(t *testing.T) {
	sims := []*sim{startSim(t), startSim(t), startSim(t)}
	for _, s := range sims {
		if err := s.setPower(true); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name        string
		concurrency int
	}{
		{"limit 2", 2},
		{"limit 16", 16},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			counter, wrapper := newSessionCounter(t)
			m, _, _ := newTestManager(t, Config{Timeout: 10 * time.Second, Concurrency: tc.concurrency, IPMIToolPath: wrapper})
			var wg sync.WaitGroup
			for i, s := range sims {
				tg := s.target(fmt.Sprintf("r9-n%d", 10+i), ipmiPassword)
				for j := range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var err error
						if j%2 == 0 {
							_, err = m.PowerState(context.Background(), tg)
						} else {
							err = m.SetNextBoot(context.Background(), tg, BootPXE, BootUEFI)
						}
						if err != nil {
							t.Error(err)
						}
					}()
				}
			}
			wg.Wait()
			for _, s := range sims {
				if n := counter.max(fmt.Sprintf("port-%d", s.port)); n != 1 {
					t.Errorf("BMC port %d: at most %d ipmitool sessions at once, want exactly 1", s.port, n)
				}
			}
			all := counter.max("all")
			if all > tc.concurrency || all < 1 {
				t.Errorf("%d ipmitool sessions at once overall, limit %d", all, tc.concurrency)
			}
			t.Logf("max concurrent sessions overall: %d (limit %d, 3 BMCs)", all, tc.concurrency)
		})
	}
}

// TestSessionCounterSeesOverlap checks the instrument used above: ipmitool
// run concurrently by hand against one BMC must show up as overlap.
func TestSessionCounterSeesOverlap(t *testing.T) {
	s := startSim(t)
	counter, wrapper := newSessionCounter(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(wrapper, "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", strconv.Itoa(s.port), "-U", "admin", "-E", "-N", "1", "-R", "1", "chassis", "power", "status")
			cmd.Env = []string{"IPMITOOL_PASSWORD=" + ipmiPassword}
			_ = cmd.Run()
		}()
	}
	wg.Wait()
	if n := counter.max(fmt.Sprintf("port-%d", s.port)); n < 2 {
		t.Errorf("4 concurrent ipmitool runs counted as at most %d at once; the counter cannot detect overlap", n)
	}
}

// BenchmarkIPMI measures one Manager call (session open + command +
// close, i.e. ipmitool runs) against a local ipmi_sim.
func BenchmarkIPMI(b *testing.B) {
	s := startSim(b)
	if err := s.setPower(true); err != nil {
		b.Fatal(err)
	}
	m, err := New(Config{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	tg := s.target("bench", ipmiPassword)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		call func() error
	}{
		{"PowerState", func() error { _, err := m.PowerState(ctx, tg); return err }},
		{"SetPowerOnWhenOn", func() error { return m.SetPower(ctx, tg, ActionOn) }},
		{"SetNextBootPXE", func() error { return m.SetNextBoot(ctx, tg, BootPXE, BootUEFI) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if err := bc.call(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
