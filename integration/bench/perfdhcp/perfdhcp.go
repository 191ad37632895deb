// Package perfdhcp reads the output of Kea's perfdhcp, for the DHCP
// integration test and the kiln-bench harness.
package perfdhcp

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ErrParse means the output is not the perfdhcp output Parse knows.
var ErrParse = errors.New("unexpected perfdhcp output")

// Result is what one perfdhcp run printed.
type Result struct {
	Achieved       float64 // 4-way exchanges per second
	DOSent, DORecv int     // DISCOVER-OFFER
	RASent, RARecv int     // REQUEST-ACK
	// Drops is the worse drop ratio of the two exchanges, in percent.
	Drops float64
	// DODelays and RADelays are the per-exchange delays in milliseconds
	// (only with -x t).
	DODelays, RADelays []float64
}

var (
	perfRateRe = regexp.MustCompile(`(?m)^Rate: ([0-9.]+)`)
	perfSentRe = regexp.MustCompile(`(?m)^sent packets: (\d+)`)
	perfRecvRe = regexp.MustCompile(`(?m)^received packets: (\d+)`)
	perfTSRe   = regexp.MustCompile(`(?m)^sent / received: ([0-9.]+) / ([0-9.]+)`)
)

// Parse parses perfdhcp -4 output (DORA scenario). A run in which the server
// never answered prints no rate line; that is a valid result with 100 %
// drops. Output without the exchange statistics wraps ErrParse.
func Parse(out string) (Result, error) {
	var r Result
	sent := atoiAll(perfSentRe, out)
	recv := atoiAll(perfRecvRe, out)
	if len(sent) < 2 || len(recv) < 2 {
		return r, fmt.Errorf("perfdhcp: %w: no DISCOVER-OFFER and REQUEST-ACK statistics", ErrParse)
	}
	if m := perfRateRe.FindStringSubmatch(out); m != nil {
		r.Achieved, _ = strconv.ParseFloat(m[1], 64)
	}
	r.DOSent, r.DORecv, r.RASent, r.RARecv = sent[0], recv[0], sent[1], recv[1]
	ratio := func(s, rx int) float64 {
		if s == 0 {
			return 100
		}
		return 100 * float64(s-rx) / float64(s)
	}
	r.Drops = max(ratio(r.DOSent, r.DORecv), ratio(r.RASent, r.RARecv))
	// -x t: "***Timestamps for packets: DISCOVER-OFFER***" then
	// "sent / received: S / R" lines, then the same for REQUEST-ACK.
	if i := strings.Index(out, "Timestamps for packets: DISCOVER-OFFER"); i >= 0 {
		rest := out[i:]
		j := strings.Index(rest, "Timestamps for packets: REQUEST-ACK")
		do, ra := rest, ""
		if j >= 0 {
			do, ra = rest[:j], rest[j:]
		}
		r.DODelays, r.RADelays = delays(do), delays(ra)
	}
	return r, nil
}

func delays(s string) []float64 {
	var out []float64
	for _, m := range perfTSRe.FindAllStringSubmatch(s, -1) {
		a, err1 := strconv.ParseFloat(m[1], 64)
		b, err2 := strconv.ParseFloat(m[2], 64)
		if err1 == nil && err2 == nil && b >= a {
			out = append(out, (b-a)*1000)
		}
	}
	return out
}

func atoiAll(re *regexp.Regexp, s string) []int {
	var out []int
	for _, m := range re.FindAllStringSubmatch(s, -1) {
		v, err := strconv.Atoi(m[1])
		if err == nil {
			out = append(out, v)
		}
	}
	return out
}
