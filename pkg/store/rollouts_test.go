package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

func openRolloutStore(t testing.TB, path string, now func() time.Time) *Store {
	t.Helper()
	s, err := Open(path, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testRollout(n, batch int) (fleet.Rollout, []fleet.RolloutHost) {
	r := fleet.Rollout{Kind: fleet.KindReimage, Image: "debian-12@1", Digest: fleet.Digest(fmt.Sprintf("sha256:%064x", 1)),
		Batch: batch, MaxFailures: 1, BootTimeout: 10 * time.Minute, State: fleet.RolloutRunning, Actor: "alice"}
	for i := range n {
		r.Hosts = append(r.Hosts, fmt.Sprintf("n%05d", i))
	}
	return r, fleet.NewRolloutHosts(&r)
}

func TestRolloutIDSortsByTime(t *testing.T) {
	tests := []struct {
		name   string
		a, b   string
		wantLt bool
	}{
		{"later millisecond", rolloutID(1_700_000_000_000, 99), rolloutID(1_700_000_000_001, 1), true},
		{"same millisecond, later seq", rolloutID(1_700_000_000_000, 35), rolloutID(1_700_000_000_000, 36), true},
		{"much later", rolloutID(1_700_000_000_000, 5), rolloutID(4_000_000_000_000, 5), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if (tt.a < tt.b) != tt.wantLt {
				t.Fatalf("%s < %s = %v", tt.a, tt.b, !tt.wantLt)
			}
		})
	}
}

func TestRolloutsPersistAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kiln.db")
	clock := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	now := func() time.Time { clock = clock.Add(time.Millisecond); return clock }
	s := openRolloutStore(t, path, now)

	r1, h1 := testRollout(7, 3)
	c1, err := s.CreateRollout(ctx, r1, h1)
	if err != nil {
		t.Fatal(err)
	}
	r2, h2 := testRollout(2, 1)
	c2, err := s.CreateRollout(ctx, r2, h2)
	if err != nil {
		t.Fatal(err)
	}
	if c1.ID == "" || c1.ID >= c2.ID {
		t.Fatalf("ids %q, %q: want non-empty and increasing", c1.ID, c2.ID)
	}

	// Progress of two hosts, then a header update.
	h1[4].State, h1[4].Attempts, h1[4].From = fleet.HostCycling, 1, "debian-12@0"
	h1[6].State, h1[6].Error = fleet.HostFailed, "bmc: timeout"
	if err := s.UpdateRolloutHosts(ctx, c1.ID, []fleet.RolloutHost{h1[4], h1[6]}); err != nil {
		t.Fatal(err)
	}
	c1.State, c1.Counts = fleet.RolloutPaused, fleet.CountHosts(h1)
	c1.Hosts = []string{"ignored"}
	if err := s.PutRollout(ctx, c1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openRolloutStore(t, path, now)
	defer s.Close()
	got, err := s.Rollout(ctx, c1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Hosts, r1.Hosts) || got.State != fleet.RolloutPaused || got.Counts.Failed != 1 || got.Counts.InFlight != 1 {
		t.Fatalf("Rollout after reopen = %+v", got)
	}
	hosts, err := s.RolloutHosts(ctx, c1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(hosts, h1) {
		t.Fatalf("RolloutHosts after reopen:\n got %+v\nwant %+v", hosts, h1)
	}
	list, err := s.Rollouts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != c1.ID || list[1].ID != c2.ID || list[0].Hosts != nil {
		t.Fatalf("Rollouts = %+v", list)
	}
}

func TestRolloutErrors(t *testing.T) {
	ctx := context.Background()
	s := openRolloutStore(t, filepath.Join(t.TempDir(), "kiln.db"), nil)
	defer s.Close()
	r, hs := testRollout(3, 1)
	c, err := s.CreateRollout(ctx, r, hs)
	if err != nil {
		t.Fatal(err)
	}
	wrongHost := hs[1]
	wrongHost.Host = "other"
	outOfRange := hs[0]
	outOfRange.Index = 9
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"duplicate id", func() error { _, err := s.CreateRollout(ctx, c, hs); return err }(), fleet.ErrExists},
		{"missing host records", func() error { _, err := s.CreateRollout(ctx, r, hs[:2]); return err }(), fleet.ErrInvalid},
		{"unknown rollout", func() error { _, err := s.Rollout(ctx, "r-nope"); return err }(), fleet.ErrNotFound},
		{"unknown rollout hosts", func() error { _, err := s.RolloutHosts(ctx, "r-nope"); return err }(), fleet.ErrNotFound},
		{"put unknown", s.PutRollout(ctx, fleet.Rollout{ID: "r-nope"}), fleet.ErrNotFound},
		{"update unknown index", s.UpdateRolloutHosts(ctx, c.ID, []fleet.RolloutHost{outOfRange}), fleet.ErrNotFound},
		{"update wrong host", s.UpdateRolloutHosts(ctx, c.ID, []fleet.RolloutHost{wrongHost}), fleet.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Fatalf("err = %v, want %v", tt.err, tt.want)
			}
		})
	}
	// A failed update changes nothing.
	got, err := s.RolloutHosts(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, hs) {
		t.Fatalf("hosts changed by failed updates: %+v", got)
	}
}

func TestUpdateRolloutHostsConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openRolloutStore(t, filepath.Join(t.TempDir(), "kiln.db"), nil)
	defer s.Close()
	r, hs := testRollout(200, 50)
	c, err := s.CreateRollout(ctx, r, hs)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range hs {
		wg.Go(func() {
			h := hs[i]
			h.State, h.Attempts = fleet.HostWaiting, i
			if err := s.UpdateRolloutHosts(ctx, c.ID, []fleet.RolloutHost{h}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := s.RolloutHosts(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !sort.SliceIsSorted(got, func(a, b int) bool { return got[a].Index < got[b].Index }) || len(got) != 200 {
		t.Fatalf("got %d hosts, not in index order", len(got))
	}
	for i, h := range got {
		if h.State != fleet.HostWaiting || h.Attempts != i {
			t.Fatalf("host %d = %+v", i, h)
		}
	}
}

// BenchmarkUpdateRolloutHost measures one host transition persisted in a
// 10,000-host rollout with 500 concurrent writers (a batch in flight).
func BenchmarkUpdateRolloutHost(b *testing.B) {
	ctx := context.Background()
	s := openRolloutStore(b, filepath.Join(b.TempDir(), "kiln.db"), nil)
	defer s.Close()
	r, hs := testRollout(10000, 500)
	c, err := s.CreateRollout(ctx, r, hs)
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(500 / max(1, testingProcs()))
	var mu sync.Mutex
	next := 0
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			i := next % len(hs)
			next++
			mu.Unlock()
			h := hs[i]
			h.State = fleet.HostWaiting
			if err := s.UpdateRolloutHosts(ctx, c.ID, []fleet.RolloutHost{h}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }
