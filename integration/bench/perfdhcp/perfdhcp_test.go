package perfdhcp

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name                           string
		file                           string
		achieved                       float64
		doSent, doRecv, raSent, raRecv int
		drops                          float64
		nDO, nRA                       int
		doFirst, raMax                 float64 // ms
	}{
		// A real dnsmasq run with -x t: 1 of 14 ACKs lost.
		{name: "timers", file: "perfdhcp-xt.txt", achieved: 7.04927, doSent: 14, doRecv: 14, raSent: 14, raRecv: 13,
			drops: 100.0 / 14, nDO: 14, nRA: 13, doFirst: 1.2, raMax: 51.425},
		// No server: every DISCOVER lost, no REQUEST sent.
		{name: "no server", file: "perfdhcp-noserver.txt", doSent: 9, raSent: 0, drops: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !near(r.Achieved, tc.achieved) || r.DOSent != tc.doSent || r.DORecv != tc.doRecv || r.RASent != tc.raSent || r.RARecv != tc.raRecv {
				t.Errorf("got %+v", r)
			}
			if !near(r.Drops, tc.drops) {
				t.Errorf("drops %v, want %v", r.Drops, tc.drops)
			}
			if len(r.DODelays) != tc.nDO || len(r.RADelays) != tc.nRA {
				t.Fatalf("%d DO and %d RA delays, want %d and %d", len(r.DODelays), len(r.RADelays), tc.nDO, tc.nRA)
			}
			if tc.nDO > 0 && math.Abs(r.DODelays[0]-tc.doFirst) > 1e-3 {
				t.Errorf("first DO delay %v ms, want %v", r.DODelays[0], tc.doFirst)
			}
			if tc.nRA > 0 && math.Abs(slices.Max(r.RADelays)-tc.raMax) > 1e-3 {
				t.Errorf("max RA delay %v ms, want %v (perfdhcp's own max delay)", slices.Max(r.RADelays), tc.raMax)
			}
		})
	}
	t.Run("garbage", func(t *testing.T) {
		if _, err := Parse("perfdhcp: bad interface\n"); !errors.Is(err, ErrParse) {
			t.Fatalf("err %v, want ErrParse", err)
		}
	})
}
