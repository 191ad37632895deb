package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"text/template"
	"time"

	"github.com/immutableinfra/kiln/integration/bench/perfdhcp"
)

// DHCP pool of every server: the whole /15 but the first /24.
const (
	dhcpStart = "198.18.1.0"
	dhcpEnd   = "198.19.255.254"
)

// dhcpServer is one DHCP server under test, started fresh (empty lease
// state) for every perfdhcp run.
type dhcpServer struct {
	name  string
	start func(ctx context.Context, dir string) (*proc, error)
}

// dhcp measures full DORA capacity with perfdhcp: per repetition, the rate
// is stepped for all servers together (interleaved: kiln, kea, dnsmasq at
// each step), a step with >= 1 % drops is retried once before a server is
// out; then each server runs at half its own best rate with per-exchange
// timestamps (-x t) for the median and p99 delays. The perfdhcp options and
// the Kea config are those of integration/bench/dhcp (its template is read
// from there).
func (r *runner) dhcp(ctx context.Context) error {
	if err := need("perfdhcp", "kea-dhcp4", "dnsmasq", "ss"); err != nil {
		return err
	}
	keaTmpl, err := template.ParseFiles(filepath.Join(r.cfg.Repo, "integration/bench/dhcp/kea-dhcp4.json.tmpl"))
	if err != nil {
		return fmt.Errorf("kea template: %w", err)
	}
	p, err := r.newPair(ctx, "d")
	if err != nil {
		return err
	}
	waitDHCP := func(ctx context.Context, pr *proc) (*proc, error) {
		if err := r.waitListen(ctx, pr, p.srvNS, "udp", 67, 20*time.Second); err != nil {
			pr.Stop()
			return nil, err
		}
		time.Sleep(300 * time.Millisecond) // Kea opens its raw socket after the UDP one
		return pr, nil
	}
	servers := []dhcpServer{
		{Kiln, func(ctx context.Context, dir string) (*proc, error) {
			// kilnd as users run it: leases durable in bbolt, discovery on.
			pr, err := r.startKilnd(ctx, p.srvNS, dir, "--interface", p.srvIf, "--advertise-ip", serverIP,
				"--dhcp-subnet", subnet, "--dhcp-range", dhcpStart+"-"+dhcpEnd, "--discovery=true", "--tftp", "off")
			if err != nil {
				return nil, err
			}
			return waitDHCP(ctx, pr)
		}},
		{"kea", func(ctx context.Context, dir string) (*proc, error) {
			var b bytes.Buffer
			if err := keaTmpl.Execute(&b, map[string]string{"Iface": p.srvIf, "Dir": dir, "Subnet": subnet, "Start": dhcpStart, "End": dhcpEnd}); err != nil {
				return nil, err
			}
			conf := filepath.Join(dir, "kea-dhcp4.json")
			if err := os.WriteFile(conf, b.Bytes(), 0o644); err != nil {
				return nil, err
			}
			pr, err := r.start(p.srvNS, "kea", []string{"KEA_PIDFILE_DIR=" + dir, "KEA_LOCKFILE_DIR=" + dir}, "kea-dhcp4", "-c", conf)
			if err != nil {
				return nil, err
			}
			return waitDHCP(ctx, pr)
		}},
		{"dnsmasq", func(ctx context.Context, dir string) (*proc, error) {
			pr, err := r.start(p.srvNS, "dnsmasq", nil, "dnsmasq", "-d", "--conf-file=/dev/null", "--port=0", "--interface="+p.srvIf, "--bind-interfaces",
				"--dhcp-range="+dhcpStart+","+dhcpEnd+",255.254.0.0,1h", "--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"),
				"--dhcp-lease-max=1000000", "--no-ping", "--quiet-dhcp", "--dhcp-authoritative", "--user=root", "--group=root",
				"--pid-file="+filepath.Join(dir, "dnsmasq.pid"))
			if err != nil {
				return nil, err
			}
			return waitDHCP(ctx, pr)
		}},
	}
	const sec = "dhcp"
	rateM := "max DORA rate with < 1 % drops"
	r.res.Declare(Metric{Section: sec, Name: rateM, Unit: "/s", Higher: true, Peers: []Peer{{"kea", 1.0, 0}, {"dnsmasq", 2.0, 0}}})
	delayMs := []string{"DISCOVER-OFFER p50 at half rate", "DISCOVER-OFFER p99 at half rate", "REQUEST-ACK p50 at half rate", "REQUEST-ACK p99 at half rate"}
	for _, m := range delayMs {
		r.res.Declare(Metric{Section: sec, Name: m, Unit: "ms", Peers: []Peer{{Name: "kea"}, {Name: "dnsmasq"}}})
	}
	rates := []int{100, 250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12000, 15000}
	period := 4
	if r.cfg.Quick {
		rates, period = []int{250, 500, 1000, 2000, 4000, 8000, 12000, 16000}, 3
	}
	run := func(s dhcpServer, rate, period int, timers bool) (perfdhcp.Result, error) {
		dir, err := os.MkdirTemp(r.work, "dhcp-"+s.name+"-")
		if err != nil {
			return perfdhcp.Result{}, err
		}
		defer os.RemoveAll(dir)
		pr, err := s.start(ctx, dir)
		if err != nil {
			return perfdhcp.Result{}, err
		}
		defer pr.Stop()
		args := []string{"perfdhcp", "-4", "-g", "single", "-l", p.cliIf, "-r", strconv.Itoa(rate), "-R", "200000", "-p", strconv.Itoa(period), "-W", "1000000"}
		if timers {
			args = append(args, "-x", "t")
		}
		out, errOut, _ := r.client(ctx, p.cliNS, time.Duration(period+30)*time.Second, args...) // non-zero exit when packets were dropped
		res, err := perfdhcp.Parse(out)
		if err != nil {
			return res, fmt.Errorf("%s at %d/s: %w\n%s%s\nserver log:\n%s", s.name, rate, err, out, errOut, pr.Log())
		}
		if pr.Exited() {
			return res, fmt.Errorf("%s exited during the run:\n%s", s.name, pr.Log())
		}
		r.logf("dhcp %-8s %6d/s for %ds: achieved %8.1f/s, DO %d/%d RA %d/%d, drops %.2f%%", s.name, rate, period, res.Achieved, res.DORecv, res.DOSent, res.RARecv, res.RASent, res.Drops)
		return res, nil
	}
	for rep := 0; rep < r.cfg.Reps; rep++ {
		best := make([]int, len(servers))
		out := make([]bool, len(servers))
		for _, rate := range rates {
			alive := false
			for i, s := range servers {
				if out[i] {
					continue
				}
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				res, err := run(s, rate, period, false)
				if err != nil {
					return err
				}
				if res.Drops >= 1 {
					if res, err = run(s, rate, period, false); err != nil {
						return err
					}
				}
				if res.Drops >= 1 {
					out[i] = true
					continue
				}
				best[i], alive = rate, true
			}
			if !alive {
				break
			}
		}
		for i, s := range servers {
			r.res.Add(sec, rateM, s.name, float64(best[i]))
			if best[i] == rates[len(rates)-1] {
				r.res.Note("dhcp: %s passed the highest step (%d/s) in repetition %d: its figure is a lower bound", s.name, best[i], rep+1)
			}
		}
		r.logf("dhcp rep %d: best rates %v (kiln, kea, dnsmasq)", rep+1, best)
		for i, s := range servers {
			half := best[i] / 2
			if half == 0 {
				continue
			}
			res, err := run(s, half, 5, true)
			if err != nil {
				return err
			}
			for j, v := range []float64{Percentile(res.DODelays, 50), Percentile(res.DODelays, 99), Percentile(res.RADelays, 50), Percentile(res.RADelays, 99)} {
				r.res.Add(sec, delayMs[j], s.name, v)
			}
		}
	}
	r.res.Note("dhcp: perfdhcp -4 -g single -W 1000000 (one client core; replies in flight at the end are awaited, up to the 1 s drop time), %d s per step, rates %v, fresh lease state per run; kiln = bin/kilnd --discovery with leases fsynced in bbolt; kea-dhcp4 memfile (single-threaded, Kea's default); dnsmasq --no-ping. Delays at half of each server's own best rate.", period, rates)
	return nil
}
