package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kiln.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func lease(ip, mac string, exp time.Time) fleet.Lease {
	return fleet.Lease{IP: netip.MustParseAddr(ip), MAC: mac, Expires: exp.UTC().Truncate(time.Second)}
}

func TestLeases(t *testing.T) {
	ctx := context.Background()
	exp := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	type step struct {
		put    []fleet.Lease
		delete []string
	}
	tests := []struct {
		name  string
		steps []step
		want  []fleet.Lease
		// byMAC: mac -> wanted ip ("" = no lease)
		byMAC map[string]string
	}{
		{
			name:  "put and list in address order",
			steps: []step{{put: []fleet.Lease{lease("198.18.1.2", "52:54:00:00:00:02", exp), lease("198.18.1.1", "52:54:00:00:00:01", exp)}}},
			want:  []fleet.Lease{lease("198.18.1.1", "52:54:00:00:00:01", exp), lease("198.18.1.2", "52:54:00:00:00:02", exp)},
			byMAC: map[string]string{"52:54:00:00:00:01": "198.18.1.1", "52:54:00:00:00:02": "198.18.1.2"},
		},
		{
			name: "one mac one lease: moving a mac drops its old address",
			steps: []step{
				{put: []fleet.Lease{lease("198.18.1.1", "52:54:00:00:00:01", exp)}},
				{put: []fleet.Lease{lease("198.18.1.5", "52:54:00:00:00:01", exp.Add(time.Hour))}},
			},
			want:  []fleet.Lease{lease("198.18.1.5", "52:54:00:00:00:01", exp.Add(time.Hour))},
			byMAC: map[string]string{"52:54:00:00:00:01": "198.18.1.5"},
		},
		{
			name: "one address one mac: a new owner replaces the old one",
			steps: []step{
				{put: []fleet.Lease{lease("198.18.1.1", "52:54:00:00:00:01", exp)}},
				{put: []fleet.Lease{lease("198.18.1.1", "52:54:00:00:00:02", exp.Add(time.Hour))}},
			},
			want:  []fleet.Lease{lease("198.18.1.1", "52:54:00:00:00:02", exp.Add(time.Hour))},
			byMAC: map[string]string{"52:54:00:00:00:01": "", "52:54:00:00:00:02": "198.18.1.1"},
		},
		{
			name: "delete removes lease and index",
			steps: []step{
				{put: []fleet.Lease{lease("198.18.1.1", "52:54:00:00:00:01", exp), lease("198.18.1.2", "52:54:00:00:00:02", exp)}},
				{delete: []string{"198.18.1.1", "198.18.1.9"}},
			},
			want:  []fleet.Lease{lease("198.18.1.2", "52:54:00:00:00:02", exp)},
			byMAC: map[string]string{"52:54:00:00:00:01": "", "52:54:00:00:00:02": "198.18.1.2"},
		},
		{
			name: "declined address without mac keeps the mac's other lease",
			steps: []step{
				{put: []fleet.Lease{lease("198.18.1.1", "52:54:00:00:00:01", exp)}},
				{put: []fleet.Lease{{IP: netip.MustParseAddr("198.18.1.7"), Declined: true, Expires: exp}}},
			},
			want: []fleet.Lease{
				lease("198.18.1.1", "52:54:00:00:00:01", exp),
				{IP: netip.MustParseAddr("198.18.1.7"), Declined: true, Expires: exp},
			},
			byMAC: map[string]string{"52:54:00:00:00:01": "198.18.1.1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, path := openTemp(t)
			for _, st := range tc.steps {
				for _, l := range st.put {
					if err := s.PutLease(ctx, l); err != nil {
						t.Fatal(err)
					}
				}
				for _, ip := range st.delete {
					if err := s.DeleteLease(ctx, netip.MustParseAddr(ip)); err != nil {
						t.Fatal(err)
					}
				}
			}
			check := func(s *Store) {
				t.Helper()
				got, err := s.Leases(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("Leases =\n%v\nwant\n%v", got, tc.want)
				}
				for mac, ip := range tc.byMAC {
					l, err := s.LeaseByMAC(ctx, mac)
					switch {
					case ip == "" && !errors.Is(err, fleet.ErrNotFound):
						t.Errorf("LeaseByMAC(%s) = %v, %v; want ErrNotFound", mac, l, err)
					case ip != "" && (err != nil || l.IP.String() != ip):
						t.Errorf("LeaseByMAC(%s) = %v, %v; want %s", mac, l, err, ip)
					}
				}
			}
			check(s)
			// Persistence: the same answers after closing and reopening the file.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			check(s2)
		})
	}
}

func TestPutLeaseRejectsNonIPv4(t *testing.T) {
	s, _ := openTemp(t)
	for _, ip := range []netip.Addr{{}, netip.MustParseAddr("2001:db8::1")} {
		if err := s.PutLease(context.Background(), fleet.Lease{IP: ip, MAC: "52:54:00:00:00:01"}); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("PutLease(%v) = %v, want ErrInvalid", ip, err)
		}
	}
}

// TestPutLeaseConcurrent checks that concurrent writers (which bbolt groups
// into shared batches) all land.
func TestPutLeaseConcurrent(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip := netip.AddrFrom4([4]byte{198, 18, byte(1 + i/250), byte(i % 250)})
			errs <- s.PutLease(ctx, fleet.Lease{IP: ip, MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i/256, i%256), Expires: time.Now().Add(time.Hour)})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("got %d leases, want %d", len(got), n)
	}
}

func BenchmarkPutLeaseParallel(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "kiln.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var mu sync.Mutex
	next := uint32(0)
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			ip := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
			mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
			if err := s.PutLease(ctx, fleet.Lease{IP: ip, MAC: mac, Expires: time.Now().Add(time.Hour)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
