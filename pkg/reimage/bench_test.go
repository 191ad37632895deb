package reimage_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/reimage"
	"github.com/immutableinfra/kiln/pkg/reimage/reimagetest"
	"github.com/immutableinfra/kiln/pkg/store"
)

// Simulated latencies, one tenth of a typical IPMI BMC and netboot so the
// benchmark runs in seconds: SetNextBoot 150 ms, PowerCycle 1.5 s, and a boot
// of 5 s from power-on to the booted report.
const (
	benchHosts   = 10000
	benchBatch   = 500
	benchSetBoot = 15 * time.Millisecond
	benchCycle   = 150 * time.Millisecond
	benchBoot    = 500 * time.Millisecond
)

// BenchmarkRollout10k reimages 10,000 simulated hosts in batches of 500 on a
// real bbolt store (fsync on): fake BMCs with the latencies above, each host
// issuing a boot attempt and recording its booted report through the store as
// kilnd's HTTP handler would (KILN_BENCH_NOSYNC=1 turns fsync off, to
// separate disk latency from the engine's own cost). It reports wall time
// against the ideal
// (batches x per-host time), CPU seconds of the process and peak memory.
func BenchmarkRollout10k(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "kiln.db")
	seed, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	seedStore(b, seed, benchHosts)
	if err := seed.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(path, store.Options{NoSync: os.Getenv("KILN_BENCH_NOSYNC") != ""})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()

	var eng *reimage.Engine
	var boots sync.WaitGroup
	pw := &reimagetest.Power{Default: reimagetest.Behavior{SetBootDelay: benchSetBoot, CycleDelay: benchCycle}}
	pw.OnCycle = func(name string, _ int) {
		boots.Go(func() {
			time.Sleep(benchBoot)
			h, err := st.GetHost(ctx, name)
			if err != nil {
				b.Error(err)
				return
			}
			img, err := st.Image(ctx, h.DesiredImage)
			if err != nil {
				b.Error(err)
				return
			}
			tok, err := st.IssueBoot(ctx, name, h.MACs[0], img)
			if err != nil {
				b.Error(err)
				return
			}
			rep, err := st.RecordReport(ctx, tok, fleet.BootReport{Phase: fleet.PhaseBooted, Digest: img.Rootfs.Digest})
			if err != nil {
				b.Error(err)
				return
			}
			eng.BootReported(rep)
		})
	}
	eng, err = reimage.New(reimage.Config{}, st, pw, nil, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()

	runtime.GC()
	var heapPeak uint64
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heapPeak = max(heapPeak, ms.HeapInuse)
			select {
			case <-t.C:
			case <-stopSampling:
				return
			}
		}
	})
	before := rusage(b)
	images := []string{"img@2", "img@1"}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		r, err := eng.Start(ctx, reimage.Request{Selector: "rack=r1", Image: images[i%2], Batch: benchBatch,
			MaxFailures: 10, BootTimeout: time.Minute, Actor: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		r, err = eng.Wait(ctx, r.ID)
		if err != nil {
			b.Fatal(err)
		}
		if r.State != fleet.RolloutSucceeded || r.Counts.Booted != benchHosts {
			b.Fatalf("rollout %s: %+v", r.State, r.Counts)
		}
		if i == 0 {
			hs, err := eng.Hosts(ctx, r.ID)
			if err != nil {
				b.Fatal(err)
			}
			logPhases(b, hs)
		}
	}
	wall := time.Since(start) / time.Duration(b.N)
	b.StopTimer()
	after := rusage(b)
	close(stopSampling)
	sampler.Wait()
	boots.Wait()

	batches := (benchHosts + benchBatch - 1) / benchBatch
	ideal := time.Duration(batches) * (benchSetBoot + benchCycle + benchBoot)
	cpu := func(r syscall.Rusage) float64 {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano()).Seconds()
	}
	b.ReportMetric(wall.Seconds(), "wall-s/rollout")
	b.ReportMetric(ideal.Seconds(), "ideal-s/rollout")
	b.ReportMetric(100*(wall.Seconds()/ideal.Seconds()-1), "overhead-%")
	b.ReportMetric((cpu(after)-cpu(before))/float64(b.N), "cpu-s/rollout")
	b.ReportMetric(float64(after.Maxrss)/1024, "peak-rss-MiB")
	b.ReportMetric(float64(heapPeak)/(1<<20), "peak-heap-MiB")
	b.Logf("%d hosts, batch %d: wall %s, ideal %s (%d batches x %s)", benchHosts, benchBatch,
		wall.Round(time.Millisecond), ideal, batches, benchSetBoot+benchCycle+benchBoot)
}

func rusage(b *testing.B) syscall.Rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru
}

// logPhases logs where a batch's time goes: start to power cycle, cycle to
// booted, and the gap before the next batch starts.
func logPhases(b *testing.B, hs []fleet.RolloutHost) {
	var toCycle, toBoot, gap, span time.Duration
	n := 0
	var prevEnd time.Time
	for lo := 0; lo < len(hs); lo += benchBatch {
		batch := hs[lo:min(len(hs), lo+benchBatch)]
		first, last := batch[0].Started, batch[0].Finished
		var c, bt time.Duration
		for _, h := range batch {
			first = minTime(first, h.Started)
			if h.Finished.After(last) {
				last = h.Finished
			}
			c = max(c, h.CycledAt.Sub(h.Started))
			bt = max(bt, h.Finished.Sub(h.CycledAt))
		}
		if !prevEnd.IsZero() {
			gap += first.Sub(prevEnd)
		}
		prevEnd = last
		toCycle += c
		toBoot += bt
		span += last.Sub(first)
		n++
	}
	d := time.Duration(n)
	b.Logf("per batch (max over hosts, mean over %d batches): start->cycle %s, cycle->booted %s, batch span %s, gap to next batch %s",
		n, (toCycle / d).Round(time.Millisecond), (toBoot / d).Round(time.Millisecond), (span / d).Round(time.Millisecond), (gap / (d - 1)).Round(time.Millisecond))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
