package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Kiln is the server name of kiln in the results.
const Kiln = "kiln"

// Metric declares one measured figure: its samples come from every server
// (kiln and its peers) and each peer gets a row with the kiln/peer ratio.
type Metric struct {
	Section string
	Name    string // e.g. "max rate, < 1 % drops"
	Unit    string // e.g. "/s", "ms", "MB/s"
	Higher  bool   // true: a higher value is better
	Peers   []Peer // empty: a kiln-only figure
}

// Peer is one peer of a metric and the target of kiln/peer, if any.
type Peer struct {
	Name string
	// Min and Max bound kiln/peer for a PASS; 0 means no bound. Both 0:
	// the row is information only.
	Min, Max float64
}

// Results collects samples of every (metric, server) pair. Safe for
// concurrent use.
type Results struct {
	mu      sync.Mutex
	metrics []Metric
	samples map[string][]float64 // key(section, metric, server)
	notes   []string
	started time.Time
}

// NewResults returns an empty result set.
func NewResults() *Results {
	return &Results{samples: map[string][]float64{}, started: time.Now()}
}

func key(section, metric, server string) string { return section + "\x00" + metric + "\x00" + server }

// Declare adds a metric (once; later calls with the same section and name
// are ignored). Rows appear in declaration order.
func (r *Results) Declare(m Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.metrics {
		if o.Section == m.Section && o.Name == m.Name {
			return
		}
	}
	r.metrics = append(r.metrics, m)
}

// Add records one sample.
func (r *Results) Add(section, metric, server string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key(section, metric, server)
	r.samples[k] = append(r.samples[k], v)
}

// Samples returns the samples of one (metric, server).
func (r *Results) Samples(section, metric, server string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]float64(nil), r.samples[key(section, metric, server)]...)
}

// Note adds a line printed under the table.
func (r *Results) Note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// Median of xs; NaN when empty.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Percentile of xs (nearest rank, p in 0..100); NaN when empty.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// spread is half the range of xs relative to its median, in percent.
func spread(xs []float64) float64 {
	m := Median(xs)
	if len(xs) < 2 || m == 0 || math.IsNaN(m) {
		return 0
	}
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return 100 * (hi - lo) / 2 / math.Abs(m)
}

// format prints a median with its spread: "123.4 ±5%".
func format(xs []float64) string {
	m := Median(xs)
	if math.IsNaN(m) {
		return "—"
	}
	s := num(m)
	if sp := spread(xs); sp >= 0.5 {
		s += fmt.Sprintf(" ±%.0f%%", sp)
	}
	return s
}

// num prints v with about 3-4 significant digits.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// verdict of one row: PASS or MISS against the peer's bounds, marked
// "(within noise)" when the ratio's range over the samples (lo..hi, from
// the extremes of kiln's and the peer's samples) straddles a bound.
func verdict(ratio, lo, hi float64, p Peer) string {
	if p.Min == 0 && p.Max == 0 {
		return "info"
	}
	if math.IsNaN(ratio) || math.IsInf(ratio, 0) {
		return "MISS (no data)"
	}
	v := "PASS"
	if (p.Min != 0 && ratio < p.Min) || (p.Max != 0 && ratio > p.Max) {
		v = "**MISS**"
	}
	if (p.Min != 0 && lo < p.Min && p.Min <= hi) || (p.Max != 0 && lo <= p.Max && p.Max < hi) {
		v += " (within noise)"
	}
	return v
}

// ratioRange is the least and greatest kiln/peer over all pairs of samples.
func ratioRange(kiln, peer []float64) (lo, hi float64) {
	if len(kiln) == 0 || len(peer) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(kiln) / slices.Max(peer), slices.Max(kiln) / slices.Min(peer)
}

func target(p Peer) string {
	switch {
	case p.Min != 0 && p.Max != 0:
		return fmt.Sprintf("%.2f..%.2f", p.Min, p.Max)
	case p.Min != 0:
		return fmt.Sprintf("≥ %.2f", p.Min)
	case p.Max != 0:
		return fmt.Sprintf("≤ %.2f", p.Max)
	}
	return ""
}

// Markdown renders the report: one table, a row per (metric, peer), then
// the notes.
func (r *Results) Markdown(cfg Config) string {
	return r.render(cfg, time.Now(), time.Since(r.started))
}

func (r *Results) render(cfg Config, now time.Time, took time.Duration) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "## kiln-bench — %s, %d repetition(s)%s, %s\n\n", now.UTC().Format("2006-01-02 15:04 UTC"), cfg.Reps,
		map[bool]string{true: ", -quick", false: ""}[cfg.Quick], took.Round(time.Second))
	b.WriteString("Medians over repetitions (± half the range, in % of the median). Ratio = kiln / peer of the medians; " +
		"\"within noise\": the ratio over the extreme samples crosses the target.\n\n")
	b.WriteString("| section | metric | kiln | peer | peer value | kiln/peer | target | result |\n")
	b.WriteString("|---|---|---:|---|---:|---:|---|---|\n")
	for _, m := range r.metrics {
		kv := r.samples[key(m.Section, m.Name, Kiln)]
		name := m.Name
		if m.Unit != "" {
			name += " (" + m.Unit + ")"
		}
		if !m.Higher && len(m.Peers) > 0 {
			name += " ↓"
		}
		if len(m.Peers) == 0 {
			fmt.Fprintf(&b, "| %s | %s | %s | — | — | — | | info |\n", m.Section, name, format(kv))
			continue
		}
		for _, p := range m.Peers {
			pv := r.samples[key(m.Section, m.Name, p.Name)]
			ratio := Median(kv) / Median(pv)
			rs := "—"
			if !math.IsNaN(ratio) && !math.IsInf(ratio, 0) {
				rs = fmt.Sprintf("%.2f", ratio)
			}
			lo, hi := ratioRange(kv, pv)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m.Section, name, format(kv), p.Name, format(pv), rs, target(p), verdict(ratio, lo, hi, p))
		}
	}
	b.WriteString("\n↓: lower is better (times, CPU); elsewhere higher is better.\n")
	for _, n := range r.notes {
		b.WriteString("\n- " + n)
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
	}
	return b.String()
}
