package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// fleetFixture fills a store with n hosts in racks of 40, each with hist
// history entries, the way a fleet looks after a year of nightly refreshes.
func fleetFixture(b *testing.B, n, hist int) *Store {
	b.Helper()
	ctx := context.Background()
	s, err := Open(filepath.Join(b.TempDir(), "kiln.db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for v := range 2 {
		if _, _, err := s.PutImage(ctx, img("deb", fmt.Sprint(v+1), fmt.Sprint(v+1))); err != nil {
			b.Fatal(err)
		}
	}
	const chunk = 500
	for start := 0; start < n; start += chunk {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := start; i < min(start+chunk, n); i++ {
				h := fleet.Host{Name: fmt.Sprintf("h%05d", i), MACs: []string{fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16, (i>>8)&0xff, i&0xff)},
					Labels: map[string]string{"rack": fmt.Sprintf("r%03d", i/40), "role": "compute"}, DesiredImage: "deb@1"}
				if err := putJSON(tx.Bucket(bHosts), []byte(h.Name), h); err != nil {
					return err
				}
				if err := tx.Bucket(bMACs).Put([]byte(h.MACs[0]), []byte(h.Name)); err != nil {
					return err
				}
				for j := range hist {
					e := fleet.HistoryEntry{From: fmt.Sprintf("deb@%d", j), To: fmt.Sprintf("deb@%d", j+1), Actor: "refresh", Reason: "nightly"}
					if err := appendHistory(tx, h.Name, e); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkListHosts measures `kiln host list` (all hosts, and one rack by
// selector) over 10,000 hosts with 100 history entries each.
func BenchmarkListHosts(b *testing.B) {
	s := fleetFixture(b, 10000, 100)
	ctx := context.Background()
	for _, tc := range []struct{ name, sel string }{{"all", ""}, {"rack", "rack=r042"}} {
		sel, _ := fleet.ParseSelector(tc.sel)
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.ListHosts(ctx, sel); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAssignSelector measures `kiln assign --selector` with fsync on:
// resolve the selector over 10,000 hosts, then assign a rack (40 hosts) or
// the whole fleet in one transaction, with a history entry per host.
func BenchmarkAssignSelector(b *testing.B) {
	ctx := context.Background()
	for _, tc := range []struct{ name, sel string }{{"rack-40", "rack=r042"}, {"fleet-10000", "role=compute"}} {
		b.Run(tc.name, func(b *testing.B) {
			s := fleetFixture(b, 10000, 100)
			s.db.NoSync = false
			sel, _ := fleet.ParseSelector(tc.sel)
			i := 0
			for b.Loop() {
				hosts, err := s.ListHosts(ctx, sel)
				if err != nil {
					b.Fatal(err)
				}
				names := make([]string, len(hosts))
				for j, h := range hosts {
					names[j] = h.Name
				}
				if err := s.Assign(ctx, names, fmt.Sprintf("deb@%d", i%2+1), "bench", ""); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
