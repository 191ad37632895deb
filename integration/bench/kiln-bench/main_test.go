package main

import (
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestParseGoBench(t *testing.T) {
	res, err := ParseGoBench(readTestdata(t, "gobench.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, bench, unit string
		want              float64
	}{
		{"custom metric", "BenchmarkRollout10k", "peak-rss-MiB", 78.98},
		{"custom metric after others", "BenchmarkRollout10k", "wall-s/rollout", 16.23},
		{"ns/op", "BenchmarkRollout10k", "ns/op", 16225368734},
		{"sub-benchmark with a dash in its name", "BenchmarkAssignSelector/fleet-10000", "ns/op", 149796006},
		{"sub-benchmark", "BenchmarkListHosts/rack", "ns/op", 39482486},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := findBench(res, tc.bench, tc.unit)
			if !ok || !near(v, tc.want) {
				t.Fatalf("%s %s = %v, %v; want %v", tc.bench, tc.unit, v, ok, tc.want)
			}
		})
	}
	if _, err := ParseGoBench("PASS\nok  \tx\t0.1s\n"); !errors.Is(err, errParse) {
		t.Fatalf("no result lines: err %v, want errParse", err)
	}
}

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name, file  string
		requests    int
		rps, bps    float64
		non2xx, err int
	}{
		{"ok", "wrk.txt", 588, 587.05, 588 * (1 << 20), 0, 0},
		{"404", "wrk-404.txt", 1395, 1393.54, 707.66 * (1 << 10), 1395, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := ParseWrk(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if w.Requests != tc.requests || !near(w.ReqPerSec, tc.rps) || math.Abs(w.BytesPerSec-tc.bps) > 1 || w.Non2xx != tc.non2xx || w.Errors != tc.err {
				t.Fatalf("got %+v", w)
			}
		})
	}
	if _, err := ParseWrk("unable to connect to 198.18.0.1:80 Connection refused\n"); !errors.Is(err, errParse) {
		t.Fatalf("err %v, want errParse", err)
	}
}

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ppid     int
		ticks    int64
		err      bool
	}{
		{"plain", "4242 (nginx) S 4241 4242 4242 0 -1 4194624 120 0 0 0 37 12 0 0 20 0 1 0 123 456 7 18446744073709551615", 4241, 49, false},
		{"name with spaces and parens", "17 (a (b) c) R 1 17 17 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 0 0 0", 1, 11, false},
		{"truncated", "17 (x) R 1 17", 0, 0, true},
		{"no name", "garbage", 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ppid, ticks, err := ParseProcStat(tc.in)
			if (err != nil) != tc.err || ppid != tc.ppid || ticks != tc.ticks {
				t.Fatalf("got %d %d %v", ppid, ticks, err)
			}
		})
	}
}

// TestCPUTicksSelf reads this process's own stat through the tree walk:
// the test has spent CPU, so the count is positive, and a busy loop
// increases it.
func TestCPUTicksSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := cpuTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		after, err := cpuTicks(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU ticks did not grow in 5 s of busy loop (%d) %d", before, x)
		}
	}
	if _, err := cpuTicks(1 << 30); err == nil {
		t.Fatal("a PID that does not exist gave no error")
	}
}

func TestStats(t *testing.T) {
	for _, tc := range []struct {
		name     string
		xs       []float64
		med, p99 float64
	}{
		{"odd", []float64{3, 1, 2}, 2, 3},
		{"even", []float64{4, 1, 3, 2}, 2.5, 4},
		{"one", []float64{7}, 7, 7},
		{"hundred", func() []float64 {
			var xs []float64
			for i := 100; i >= 1; i-- {
				xs = append(xs, float64(i))
			}
			return xs
		}(), 50.5, 99},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m := Median(tc.xs); !near(m, tc.med) {
				t.Errorf("median %v, want %v", m, tc.med)
			}
			if p := Percentile(tc.xs, 99); !near(p, tc.p99) {
				t.Errorf("p99 %v, want %v", p, tc.p99)
			}
		})
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(Percentile(nil, 50)) {
		t.Error("statistics of nothing must be NaN")
	}
}

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ratio, lo, hi float64
		peer          Peer
		want          string
	}{
		{"info", 0.5, 0.4, 0.6, Peer{Name: "x"}, "info"},
		{"min met", 1.0, 0.95, 1.05, Peer{Name: "x", Min: 0.9}, "PASS"},
		{"min missed", 0.89, 0.85, 0.89, Peer{Name: "x", Min: 0.9}, "**MISS**"},
		{"min missed within noise", 0.89, 0.85, 0.95, Peer{Name: "x", Min: 0.9}, "**MISS** (within noise)"},
		{"max met", 1.0, 0.9, 1.0, Peer{Name: "x", Max: 1.0}, "PASS"},
		{"max met within noise", 0.98, 0.9, 1.1, Peer{Name: "x", Max: 1.0}, "PASS (within noise)"},
		{"max missed", 1.01, 1.01, 1.2, Peer{Name: "x", Max: 1.0}, "**MISS**"},
		{"no data", math.NaN(), math.NaN(), math.NaN(), Peer{Name: "x", Min: 1}, "MISS (no data)"},
		{"peer zero", math.Inf(1), 0, math.Inf(1), Peer{Name: "x", Min: 1}, "MISS (no data)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := verdict(tc.ratio, tc.lo, tc.hi, tc.peer); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	lo, hi := ratioRange([]float64{3, 4}, []float64{2, 8})
	if lo != 3.0/8 || hi != 2 {
		t.Fatalf("ratioRange = %v, %v; want 0.375, 2", lo, hi)
	}
}

// TestMarkdownGolden renders a fixed result set (go test -update rewrites
// the golden file).
func TestMarkdownGolden(t *testing.T) {
	r := NewResults()
	r.Declare(Metric{Section: "dhcp", Name: "max rate", Unit: "/s", Higher: true, Peers: []Peer{{"kea", 1, 0}, {"dnsmasq", 2, 0}}})
	r.Declare(Metric{Section: "tftp", Name: "ipxe.efi ×1 curl", Unit: "ms", Peers: []Peer{{"dnsmasq", 0, 1}, {Name: "tftpd-hpa"}}})
	r.Declare(Metric{Section: "control", Name: "rollout wall", Unit: "s"})
	r.Declare(Metric{Section: "dhcp", Name: "max rate"}) // ignored: declared already
	for _, v := range []float64{3000, 4000, 3500} {
		r.Add("dhcp", "max rate", Kiln, v)
	}
	for _, v := range []float64{2500, 2500, 3200} {
		r.Add("dhcp", "max rate", "kea", v)
	}
	r.Add("dhcp", "max rate", "dnsmasq", 250)
	r.Add("tftp", "ipxe.efi ×1 curl", Kiln, 90)
	r.Add("tftp", "ipxe.efi ×1 curl", "dnsmasq", 60)
	r.Add("control", "rollout wall", Kiln, 31.4)
	r.Note("a note")
	got := r.render(Config{Reps: 3}, time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC), 95*time.Second)
	golden := filepath.Join("testdata", "report.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readTestdata(t, "report.golden")
	if got != want {
		t.Fatalf("report differs from %s (-update rewrites it):\n%s", golden, got)
	}
	for _, s := range []string{"| dhcp | max rate (/s) | 3500 ±14% | kea | 2500 ±14% | 1.40 | ≥ 1.00 | PASS (within noise) |", // 3000/3200 < 1
		"| dhcp | max rate (/s) | 3500 ±14% | dnsmasq | 250.0 | 14.00 | ≥ 2.00 | PASS |",
		"| tftp | ipxe.efi ×1 curl (ms) ↓ | 90.00 | dnsmasq | 60.00 | 1.50 | ≤ 1.00 | **MISS** |",
		"| tftp | ipxe.efi ×1 curl (ms) ↓ | 90.00 | tftpd-hpa | — | — |  | info |"} {
		if !strings.Contains(got, s) {
			t.Errorf("report lacks %q", s)
		}
	}
}

func TestConfigNormalize(t *testing.T) {
	repo, _ := filepath.Abs("../../..")
	bin := t.TempDir()
	for _, b := range []string{"kilnd", "kiln", "kiln-init"} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"defaults", Config{Repo: repo, Bin: bin}, ""},
		{"bad section", Config{Repo: repo, Bin: bin, Only: []string{"dns"}}, "-only"},
		{"bad reps", Config{Repo: repo, Bin: bin, Reps: 50}, "-reps"},
		{"bad deadline", Config{Repo: repo, Bin: bin, Deadline: -time.Second}, "-deadline"},
		{"not the repo", Config{Repo: t.TempDir(), Bin: bin}, "-repo"},
		{"no binaries", Config{Repo: repo, Bin: t.TempDir()}, "-bin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.normalize()
			if tc.err == "" {
				if err != nil || tc.cfg.Reps != 3 || tc.cfg.Deadline != 45*time.Minute || !tc.cfg.want("boot") {
					t.Fatalf("err %v, cfg %+v", err, tc.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want one naming %s", err, tc.err)
			}
		})
	}
}
