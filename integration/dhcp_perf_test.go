//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/immutableinfra/kiln/pkg/testtool"
)

// The perfdhcp comparison: see bench/dhcp/README.md.

const (
	dhcpPerfServerIP = "198.18.0.1"
	dhcpPerfClientIP = "198.18.0.2"
	dhcpPerfSubnet   = "198.18.0.0/15"
	dhcpPerfStart    = "198.18.1.0"
	dhcpPerfEnd      = "198.19.255.254"
)

type dhcpPerfNet struct {
	srvNS, cliNS, srvIf, cliIf string
}

// dhcpPerfSetup creates two namespaces joined by a veth pair; cleanup
// deletes them (and with them the veth) even when the test fails.
func dhcpPerfSetup(t *testing.T) dhcpPerfNet {
	t.Helper()
	id := os.Getpid() % 100000
	n := dhcpPerfNet{
		srvNS: fmt.Sprintf("kiln-dp-s-%d", id), cliNS: fmt.Sprintf("kiln-dp-c-%d", id),
		srvIf: fmt.Sprintf("kdps%d", id), cliIf: fmt.Sprintf("kdpc%d", id),
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", n.srvNS).Run()
		exec.Command("ip", "netns", "del", n.cliNS).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", n.srvNS},
		{"netns", "add", n.cliNS},
		{"link", "add", n.srvIf, "netns", n.srvNS, "type", "veth", "peer", "name", n.cliIf, "netns", n.cliNS},
		{"-n", n.srvNS, "addr", "add", dhcpPerfServerIP + "/15", "dev", n.srvIf},
		{"-n", n.cliNS, "addr", "add", dhcpPerfClientIP + "/15", "dev", n.cliIf},
		{"-n", n.srvNS, "link", "set", "lo", "up"},
		{"-n", n.cliNS, "link", "set", "lo", "up"},
		{"-n", n.srvNS, "link", "set", n.srvIf, "up"},
		{"-n", n.cliNS, "link", "set", n.cliIf, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return n
}

// dhcpPerfServer is one DHCP server under test: argv to run in the server
// namespace with a fresh state dir.
type dhcpPerfServer struct {
	name string
	argv func(dir string) ([]string, []string) // argv, extra env
}

// dhcpPerfStart starts srv and waits until something listens on UDP 67 in
// the namespace. The returned stop func ends it and returns its log.
func dhcpPerfStartServer(t *testing.T, n dhcpPerfNet, srv dhcpPerfServer) (stop func() string) {
	t.Helper()
	dir := t.TempDir()
	argv, env := srv.argv(dir)
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.srvNS}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", srv.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stopped := false
	stop = func() string {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
		return log.String()
	}
	t.Cleanup(func() { stop() })
	for i := 0; ; i++ {
		out, _ := exec.Command("ip", "netns", "exec", n.srvNS, "ss", "-Huanp", "sport", "= :67").Output()
		if len(bytes.TrimSpace(out)) > 0 {
			break
		}
		select {
		case <-done:
			t.Fatalf("%s exited at start:\n%s", srv.name, log.String())
		default:
		}
		if i > 100 {
			t.Fatalf("%s does not listen on :67 after 10s:\n%s", srv.name, stop())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // raw sockets (kea) come up after the UDP one
	return stop
}

type dhcpPerfResult struct {
	target       int
	achieved     float64
	doSent, doRx int
	raSent, raRx int
	drops        float64 // the worse ratio of the two exchanges, percent
	out          string
}

var (
	dhcpPerfRateRe  = regexp.MustCompile(`Rate: ([0-9.]+)`)
	dhcpPerfSentRe  = regexp.MustCompile(`sent packets: (\d+)`)
	dhcpPerfRecvRe  = regexp.MustCompile(`received packets: (\d+)`)
	dhcpPerfNumbers = func(re *regexp.Regexp, s string) []int {
		var out []int
		for _, m := range re.FindAllStringSubmatch(s, -1) {
			v, _ := strconv.Atoi(m[1])
			out = append(out, v)
		}
		return out
	}
)

func dhcpPerfParse(out string) (dhcpPerfResult, error) {
	var r dhcpPerfResult
	sent, recv := dhcpPerfNumbers(dhcpPerfSentRe, out), dhcpPerfNumbers(dhcpPerfRecvRe, out)
	m := dhcpPerfRateRe.FindStringSubmatch(out)
	if len(sent) < 2 || len(recv) < 2 || m == nil {
		return r, fmt.Errorf("unexpected perfdhcp output")
	}
	r.achieved, _ = strconv.ParseFloat(m[1], 64)
	r.doSent, r.doRx, r.raSent, r.raRx = sent[0], recv[0], sent[1], recv[1]
	ratio := func(s, rx int) float64 {
		if s == 0 {
			return 100
		}
		return 100 * float64(s-rx) / float64(s)
	}
	r.drops = max(ratio(r.doSent, r.doRx), ratio(r.raSent, r.raRx))
	return r, nil
}

func dhcpPerfRun(t *testing.T, n dhcpPerfNet, srv dhcpPerfServer, rate, period int) dhcpPerfResult {
	t.Helper()
	stop := dhcpPerfStartServer(t, n, srv)
	cmd := exec.Command("ip", "netns", "exec", n.cliNS, "perfdhcp", "-4", "-g", "single", "-l", n.cliIf,
		"-r", strconv.Itoa(rate), "-R", "200000", "-p", strconv.Itoa(period))
	out, _ := cmd.CombinedOutput() // perfdhcp exits non-zero when packets were dropped
	slog := stop()
	r, err := dhcpPerfParse(string(out))
	if err != nil {
		t.Fatalf("%s at %d/s: %v\n%s\nserver log:\n%s", srv.name, rate, err, out, slog)
	}
	r.target, r.out = rate, string(out)+"\n--- server:\n"+slog
	t.Logf("%-8s target %6d/s achieved %8.1f/s  DO %d/%d  RA %d/%d  drops %.2f%%",
		srv.name, rate, r.achieved, r.doRx, r.doSent, r.raRx, r.raSent, r.drops)
	return r
}

func TestDHCPPerf(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("KILN_REQUIRE_TOOLS") != "" {
			t.Fatal("TestDHCPPerf needs root (network namespaces)")
		}
		t.Skip("needs root (network namespaces)")
	}
	testtool.Need(t, "ip")
	testtool.Need(t, "ss")
	testtool.Need(t, "perfdhcp")
	kea := testtool.Need(t, "kea-dhcp4")
	dnsmasq := testtool.Need(t, "dnsmasq")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "kiln-dhcpd")
	if out, err := exec.Command(gobin, "build", "-o", bin, "./bench/dhcp/kiln-dhcpd").CombinedOutput(); err != nil {
		t.Fatalf("build kiln-dhcpd: %v\n%s", err, out)
	}
	keaTmpl, err := template.ParseFiles("bench/dhcp/kea-dhcp4.json.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	n := dhcpPerfSetup(t)

	kiln := dhcpPerfServer{name: "kiln", argv: func(dir string) ([]string, []string) {
		return []string{bin, "-interface", n.srvIf, "-advertise-ip", dhcpPerfServerIP, "-dhcp-subnet", dhcpPerfSubnet,
			"-dhcp-range", dhcpPerfStart + "-" + dhcpPerfEnd, "-db", filepath.Join(dir, "kiln.db")}, nil
	}}
	keaServer := func(name, mt string) dhcpPerfServer {
		return dhcpPerfServer{name: name, argv: func(dir string) ([]string, []string) {
			var b bytes.Buffer
			if err := keaTmpl.Execute(&b, map[string]string{"Iface": n.srvIf, "Dir": dir, "Subnet": dhcpPerfSubnet, "Start": dhcpPerfStart, "End": dhcpPerfEnd, "MT": mt}); err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(dir, "kea-dhcp4.json")
			if err := os.WriteFile(conf, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			return []string{kea, "-c", conf}, []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}
		}}
	}
	keaSrv := keaServer("kea", "")
	dnsmasqSrv := dhcpPerfServer{name: "dnsmasq", argv: func(dir string) ([]string, []string) {
		return []string{dnsmasq, "-d", "--conf-file=/dev/null", "--port=0", "--interface=" + n.srvIf, "--bind-interfaces",
			"--dhcp-range=" + dhcpPerfStart + "," + dhcpPerfEnd + ",255.254.0.0,1h", "--dhcp-leasefile=" + filepath.Join(dir, "dnsmasq.leases"),
			"--dhcp-lease-max=1000000", "--no-ping", "--quiet-dhcp", "--dhcp-authoritative", "--user=root", "--group=root",
			"--pid-file=" + filepath.Join(dir, "dnsmasq.pid")}, nil
	}}
	servers := []dhcpPerfServer{kiln, keaSrv, dnsmasqSrv}

	if os.Getenv("KILN_BENCH") == "" {
		// Quick: one modest rate each; kiln must complete DORA with < 1 % drops.
		var table []string
		for _, s := range servers {
			r := dhcpPerfRun(t, n, s, 500, 3)
			// On a shared machine a neighbour's CPU burst can delay a
			// batch of ACKs past perfdhcp's 1 s drop time: up to 3 tries.
			for try := 1; s.name == "kiln" && try < 3 && (r.drops >= 1 || r.raRx == 0); try++ {
				r = dhcpPerfRun(t, n, s, 500, 3)
			}
			table = append(table, fmt.Sprintf("%-8s 500/s for 3s: achieved %.1f/s, drops %.2f%%", s.name, r.achieved, r.drops))
			if s.name == "kiln" && (r.drops >= 1 || r.raRx == 0) {
				t.Errorf("kiln at 500/s, 3 tries: %.2f%% drops (DO %d/%d, RA %d/%d)\n%s", r.drops, r.doRx, r.doSent, r.raRx, r.raSent, r.out)
			}
		}
		t.Logf("DHCP DORA at 500/s (set KILN_BENCH=1 for the step search):\n%s", strings.Join(table, "\n"))
		return
	}

	// The step search also runs Kea with its multi-threading on (2 threads),
	// Kea's best configuration here.
	servers = append(servers, keaServer("kea-mt", "yes"))
	rates := []int{250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000, 10000, 12000}
	if s := os.Getenv("KILN_BENCH_RATES"); s != "" {
		rates = nil
		for _, f := range strings.Split(s, ",") {
			v, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("KILN_BENCH_RATES: %v", err)
			}
			rates = append(rates, v)
		}
	}
	// Rates are stepped for all servers together (interleaved, so that load
	// from other work on the machine hits them alike); a step with >= 1 %
	// drops is retried once before a server is out.
	const period = 5
	best := make([]dhcpPerfResult, len(servers))
	out := make([]bool, len(servers))
	for _, rate := range rates {
		alive := false
		for i, s := range servers {
			if out[i] {
				continue
			}
			r := dhcpPerfRun(t, n, s, rate, period)
			if r.drops >= 1 {
				r = dhcpPerfRun(t, n, s, rate, period)
			}
			if r.drops >= 1 {
				out[i] = true
				if s.name == "kiln" {
					t.Logf("kiln at %d/s, first rate with >= 1%% drops:\n%s", rate, r.out)
				}
				continue
			}
			best[i], alive = r, true
		}
		if !alive {
			break
		}
	}
	var table []string
	for i, s := range servers {
		b := best[i]
		table = append(table, fmt.Sprintf("%-8s highest rate with < 1%% drops: %6d/s (achieved %8.1f/s, drops %.2f%%)", s.name, b.target, b.achieved, b.drops))
	}
	t.Logf("perfdhcp full DORA, %ds per step, same machine and run:\n%s", period, strings.Join(table, "\n"))
}
