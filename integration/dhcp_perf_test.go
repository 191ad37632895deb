//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/immutableinfra/kiln/integration/bench/perfdhcp"
	"github.com/immutableinfra/kiln/integration/labkit"
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
	if err := labkit.VethPair(context.Background(), n.srvNS, n.cliNS, n.srvIf, n.cliIf, dhcpPerfServerIP+"/15", dhcpPerfClientIP+"/15"); err != nil {
		t.Fatal(err)
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

// dhcpPerfRun runs perfdhcp against a fresh srv at rate for period seconds
// and returns the result and what perfdhcp and the server printed.
func dhcpPerfRun(t *testing.T, n dhcpPerfNet, srv dhcpPerfServer, rate, period int) (perfdhcp.Result, string) {
	t.Helper()
	stop := dhcpPerfStartServer(t, n, srv)
	cmd := exec.Command("ip", "netns", "exec", n.cliNS, "perfdhcp", "-4", "-g", "single", "-l", n.cliIf,
		"-r", strconv.Itoa(rate), "-R", "200000", "-p", strconv.Itoa(period))
	out, _ := cmd.CombinedOutput() // perfdhcp exits non-zero when packets were dropped
	slog := stop()
	r, err := perfdhcp.Parse(string(out))
	if err != nil {
		t.Fatalf("%s at %d/s: %v\n%s\nserver log:\n%s", srv.name, rate, err, out, slog)
	}
	t.Logf("%-8s target %6d/s achieved %8.1f/s  DO %d/%d  RA %d/%d  drops %.2f%%",
		srv.name, rate, r.Achieved, r.DORecv, r.DOSent, r.RARecv, r.RASent, r.Drops)
	return r, string(out) + "\n--- server:\n" + slog
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
	keaSrv := dhcpPerfServer{name: "kea", argv: func(dir string) ([]string, []string) {
		var b bytes.Buffer
		if err := keaTmpl.Execute(&b, map[string]string{"Iface": n.srvIf, "Dir": dir, "Subnet": dhcpPerfSubnet, "Start": dhcpPerfStart, "End": dhcpPerfEnd}); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "kea-dhcp4.json")
		if err := os.WriteFile(conf, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{kea, "-c", conf}, []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}
	}}
	dnsmasqSrv := dhcpPerfServer{name: "dnsmasq", argv: func(dir string) ([]string, []string) {
		return []string{dnsmasq, "-d", "--conf-file=/dev/null", "--port=0", "--interface=" + n.srvIf, "--bind-interfaces",
			"--dhcp-range=" + dhcpPerfStart + "," + dhcpPerfEnd + ",255.254.0.0,1h", "--dhcp-leasefile=" + filepath.Join(dir, "dnsmasq.leases"),
			"--dhcp-lease-max=1000000", "--no-ping", "--quiet-dhcp", "--dhcp-authoritative", "--user=root", "--group=root",
			"--pid-file=" + filepath.Join(dir, "dnsmasq.pid")}, nil
	}}
	servers := []dhcpPerfServer{kiln, keaSrv, dnsmasqSrv}

	// One modest rate each; kiln must complete DORA with < 1 % drops. The
	// step search for the highest rate is make bench's DHCP section.
	var table []string
	for _, s := range servers {
		r, out := dhcpPerfRun(t, n, s, 500, 3)
		// On a shared machine a neighbour's CPU burst can delay a batch of
		// ACKs past perfdhcp's 1 s drop time: up to 3 tries.
		for try := 1; s.name == "kiln" && try < 3 && (r.Drops >= 1 || r.RARecv == 0); try++ {
			r, out = dhcpPerfRun(t, n, s, 500, 3)
		}
		table = append(table, fmt.Sprintf("%-8s 500/s for 3s: achieved %.1f/s, drops %.2f%%", s.name, r.Achieved, r.Drops))
		if s.name == "kiln" && (r.Drops >= 1 || r.RARecv == 0) {
			t.Errorf("kiln at 500/s, 3 tries: %.2f%% drops (DO %d/%d, RA %d/%d)\n%s", r.Drops, r.DORecv, r.DOSent, r.RARecv, r.RASent, out)
		}
	}
	t.Logf("DHCP DORA at 500/s (make bench has the step search):\n%s", strings.Join(table, "\n"))
}
