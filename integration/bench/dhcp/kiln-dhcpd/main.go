// Command kiln-dhcpd runs kiln's DHCP server (pkg/dhcp) alone, in pool mode
// with discovery, on one interface with hosts and leases in a real bbolt
// file, for the perfdhcp comparison in integration/dhcp_perf_test.go. The
// fleet is empty, so every client gets a pool lease and a discovery boot
// decision, after the same host lookups kilnd makes.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/immutableinfra/kiln/pkg/dhcp"
	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/store"
)

// timedLeases measures the lease store as the server sees it.
type timedLeases struct {
	*store.Store
	n, ns, max atomic.Int64
}

func (t *timedLeases) PutLease(ctx context.Context, l fleet.Lease) error {
	start := time.Now()
	err := t.Store.PutLease(ctx, l)
	d := time.Since(start).Nanoseconds()
	t.n.Add(1)
	t.ns.Add(d)
	for {
		m := t.max.Load()
		if d <= m || t.max.CompareAndSwap(m, d) {
			break
		}
	}
	return err
}

func main() {
	iface := flag.String("interface", "", "interface to serve")
	serverIP := flag.String("advertise-ip", "", "server address")
	subnet := flag.String("dhcp-subnet", "", "pool subnet, e.g. 198.18.0.0/15")
	rng := flag.String("dhcp-range", "", "pool START-END")
	db := flag.String("db", "", "bbolt file")
	workers := flag.Int("workers", 0, "concurrent handlers (0 = default)")
	nosync := flag.Bool("nosync", false, "diagnosis only: skip fsync (a crash loses leases)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*iface, *serverIP, *subnet, *rng, *db, *workers, *nosync); err != nil {
		fmt.Fprintln(os.Stderr, "kiln-dhcpd:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(iface, serverIP, subnet, rng, db string, workers int, nosync bool) error {
	start, end, ok := strings.Cut(rng, "-")
	if !ok {
		return fmt.Errorf("--dhcp-range %q is not START-END", rng)
	}
	var cfg dhcp.Config
	var err error
	cfg.Discovery, cfg.Workers = true, workers
	if cfg.ServerIP, err = netip.ParseAddr(serverIP); err != nil {
		return fmt.Errorf("--advertise-ip: %w", err)
	}
	p := &dhcp.Pool{}
	if p.Subnet, err = netip.ParsePrefix(subnet); err != nil {
		return fmt.Errorf("--dhcp-subnet: %w", err)
	}
	if p.Start, err = netip.ParseAddr(start); err != nil {
		return fmt.Errorf("--dhcp-range: %w", err)
	}
	if p.End, err = netip.ParseAddr(end); err != nil {
		return fmt.Errorf("--dhcp-range: %w", err)
	}
	cfg.Pool = p
	st, err := store.Open(db, store.Options{NoSync: nosync})
	if err != nil {
		return err
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	tl := &timedLeases{Store: st}
	srv, err := dhcp.New(cfg, st, tl, log, reg)
	if err != nil {
		return err
	}
	conn, err := dhcp.ListenInterface(iface, 67)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(os.Stderr, "kiln-dhcpd: serving on", iface)
	t0 := time.Now()
	err = srv.Serve(ctx, conn)
	dumpMetrics(reg, time.Since(t0))
	if n := tl.n.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "kiln-dhcpd: PutLease n=%d mean=%s max=%s\n", n, time.Duration(tl.ns.Load()/n), time.Duration(tl.max.Load()))
	}
	return err
}

// dumpMetrics prints the server's counters on exit, for the benchmark log.
func dumpMetrics(reg *prometheus.Registry, up time.Duration) {
	mfs, err := reg.Gather()
	if err != nil {
		return
	}
	var lines []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := 0.0
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				if h.GetSampleCount() > 0 {
					lines = append(lines, fmt.Sprintf("%s mean=%.0fus n=%d", mf.GetName(), h.GetSampleSum()/float64(h.GetSampleCount())*1e6, h.GetSampleCount()))
				}
				continue
			}
			lines = append(lines, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), v))
		}
	}
	sort.Strings(lines)
	fmt.Fprintf(os.Stderr, "kiln-dhcpd: up %s\n%s\n", up.Round(time.Millisecond), strings.Join(lines, "\n"))
}
