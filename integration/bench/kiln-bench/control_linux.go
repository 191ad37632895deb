package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// goBinary is go from PATH, else Go's default install location.
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// control runs the control-plane benchmarks (pkg/reimage BenchmarkRollout10k
// once, pkg/store ListHosts and AssignSelector) in the repository and puts
// their figures into the table; there is no peer to run them against.
func (r *runner) control(ctx context.Context) error {
	const sec = "control"
	type bench struct {
		pkg, pattern, benchtime string
		figures                 []struct{ bench, unit, metric, unitOut string }
	}
	fig := func(bench, unit, metric, unitOut string) struct{ bench, unit, metric, unitOut string } {
		return struct{ bench, unit, metric, unitOut string }{bench, unit, metric, unitOut}
	}
	benches := []bench{
		{"./pkg/reimage/", "^BenchmarkRollout10k$", "1x", []struct{ bench, unit, metric, unitOut string }{
			fig("BenchmarkRollout10k", "wall-s/rollout", "rollout of 10,000 hosts, wall", "s"),
			fig("BenchmarkRollout10k", "ideal-s/rollout", "rollout of 10,000 hosts, ideal (batches × host time)", "s"),
			fig("BenchmarkRollout10k", "overhead-%", "rollout of 10,000 hosts, overhead over ideal", "%"),
			fig("BenchmarkRollout10k", "cpu-s/rollout", "rollout of 10,000 hosts, CPU", "s"),
			fig("BenchmarkRollout10k", "peak-rss-MiB", "rollout of 10,000 hosts, peak RSS", "MiB"),
		}},
		{"./pkg/store/", "^Benchmark(ListHosts|AssignSelector)$", "3x", []struct{ bench, unit, metric, unitOut string }{
			fig("BenchmarkListHosts/all", "ns/op", "store: list 10,000 hosts", "ms"),
			fig("BenchmarkListHosts/rack", "ns/op", "store: list one rack by selector", "ms"),
			fig("BenchmarkAssignSelector/rack-40", "ns/op", "store: assign a rack (40 hosts, fsync)", "ms"),
			fig("BenchmarkAssignSelector/fleet-10000", "ns/op", "store: assign 10,000 hosts (fsync)", "ms"),
		}},
	}
	for _, b := range benches {
		for _, f := range b.figures {
			r.res.Declare(Metric{Section: sec, Name: f.metric, Unit: f.unitOut})
		}
	}
	reps := r.cfg.Reps
	if r.cfg.Quick {
		reps = 1
	}
	for rep := 0; rep < reps; rep++ {
		for _, b := range benches {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
			cmd := exec.CommandContext(cctx, goBinary(), "test", "-run", "^$", "-bench", b.pattern, "-benchtime", b.benchtime, b.pkg)
			cmd.Dir = r.cfg.Repo
			cmd.Env = os.Environ()
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				return fmt.Errorf("go test -bench %s %s: %w\n%s", b.pattern, b.pkg, err, out)
			}
			os.MkdirAll(filepath.Join(r.work, "logs"), 0o755)
			os.WriteFile(filepath.Join(r.work, "logs", fmt.Sprintf("gobench-%s-%d.txt", filepath.Base(b.pkg), rep+1)), out, 0o644)
			res, err := ParseGoBench(string(out))
			if err != nil {
				return fmt.Errorf("%s: %w\n%s", b.pkg, err, out)
			}
			for _, f := range b.figures {
				v, ok := findBench(res, f.bench, f.unit)
				if !ok {
					return fmt.Errorf("%s: no %s %s in:\n%s", b.pkg, f.bench, f.unit, out)
				}
				if f.unit == "ns/op" {
					v /= 1e6
				}
				r.res.Add(sec, f.metric, Kiln, v)
				r.logf("control %s: %s %s", f.metric, num(v), f.unitOut)
			}
		}
	}
	r.res.Note("control: go test -bench in-process (the engine and the bbolt store as kilnd runs them, fsync on, simulated BMCs and boots: see pkg/reimage/bench_test.go); CPU and peak RSS are those of the benchmark process; %d repetition(s).", reps)
	return nil
}

func findBench(res []GoBench, name, unit string) (float64, bool) {
	for _, b := range res {
		if b.Name == name || strings.TrimSuffix(b.Name, "-") == name {
			v, ok := b.Metrics[unit]
			return v, ok
		}
	}
	return 0, false
}
