package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// errParse is returned when a tool's output is not what the parser knows.
var errParse = errors.New("unexpected output")

// GoBench is one result line of `go test -bench`.
type GoBench struct {
	Name    string             // without the -GOMAXPROCS suffix
	N       int                // iterations
	Metrics map[string]float64 // unit -> value, e.g. "ns/op", "peak-rss-MiB"
}

var goBenchRe = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

// ParseGoBench parses the result lines of `go test -bench` output.
func ParseGoBench(out string) ([]GoBench, error) {
	var res []GoBench
	for _, line := range strings.Split(out, "\n") {
		m := goBenchRe.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		b := GoBench{Name: m[1], N: n, Metrics: map[string]float64{}}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			b.Metrics[f[i+1]] = v
		}
		if len(b.Metrics) == 0 {
			continue
		}
		res = append(res, b)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("go test -bench: %w: no benchmark result lines", errParse)
	}
	return res, nil
}

// Wrk is what wrk printed.
type Wrk struct {
	Requests    int
	ReqPerSec   float64
	BytesPerSec float64
	Non2xx      int
	Errors      int // socket errors of all kinds
}

var (
	wrkReqsRe  = regexp.MustCompile(`(?m)^\s*(\d+) requests in`)
	wrkRPSRe   = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkTPSRe   = regexp.MustCompile(`(?m)^Transfer/sec:\s+([0-9.]+)([KMGT]?B)`)
	wrkNon2Re  = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	wrkSockRe  = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	unitFactor = map[string]float64{"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
)

// ParseWrk parses wrk's summary.
func ParseWrk(out string) (Wrk, error) {
	var w Wrk
	m1, m2, m3 := wrkReqsRe.FindStringSubmatch(out), wrkRPSRe.FindStringSubmatch(out), wrkTPSRe.FindStringSubmatch(out)
	if m1 == nil || m2 == nil || m3 == nil {
		return w, fmt.Errorf("wrk: %w", errParse)
	}
	w.Requests, _ = strconv.Atoi(m1[1])
	w.ReqPerSec, _ = strconv.ParseFloat(m2[1], 64)
	v, _ := strconv.ParseFloat(m3[1], 64)
	w.BytesPerSec = v * unitFactor[m3[2]]
	if m := wrkNon2Re.FindStringSubmatch(out); m != nil {
		w.Non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkSockRe.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			w.Errors += n
		}
	}
	return w, nil
}

// ParseProcStat returns the parent PID and utime+stime (clock ticks) from
// the content of /proc/PID/stat.
func ParseProcStat(s string) (ppid int, ticks int64, err error) {
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc stat: %w", errParse)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc stat: %w: %d fields", errParse, len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, 0, fmt.Errorf("/proc stat: %w: %v", errParse, err)
	}
	return ppid, ut + st, nil
}
