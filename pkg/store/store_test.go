package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { c.t = c.t.Add(time.Second); return c.t }

func openTest(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kiln.db")
	c := &clock{t: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)}
	s, err := Open(path, Options{Now: c.now, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func img(name, version, rootfs string) fleet.Image {
	d := func(s string) fleet.Digest { return fleet.Digest(fmt.Sprintf("sha256:%064s", s)) }
	return fleet.Image{Ref: name + "@" + version, Name: name, Version: version, Arch: "x86_64",
		Rootfs: fleet.Artifact{Digest: d(rootfs), Size: 10}, Kernel: fleet.Artifact{Digest: d("e"), Size: 5}}
}

func TestOpenLockedAndSchema(t *testing.T) {
	s, path := openTest(t)
	if _, err := Open(path, Options{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: got %v, want ErrLocked", err)
	}
	// A file from a newer kiln is refused.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put(kSchema, u64(SchemaVersion+1)) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path, Options{}); !errors.Is(err, ErrSchema) {
		t.Fatalf("newer schema: got %v, want ErrSchema", err)
	}
}

func TestHosts(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	h := fleet.Host{Name: "r1-n1", MACs: []string{"52:54:00:AA:00:01"}, Labels: map[string]string{"rack": "r1"},
		IP: netip.MustParsePrefix("198.18.0.10/15")}
	if _, err := s.CreateHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		host fleet.Host
		want error
	}{
		{"same name", fleet.Host{Name: "r1-n1", MACs: []string{"52:54:00:aa:00:09"}}, fleet.ErrExists},
		{"mac taken", fleet.Host{Name: "r1-n2", MACs: []string{"52-54-00-aa-00-01"}}, fleet.ErrConflict},
		{"bad mac", fleet.Host{Name: "r1-n3", MACs: []string{"52:54:00"}}, fleet.ErrInvalid},
		{"bad name", fleet.Host{Name: "R1 n3", MACs: []string{"52:54:00:aa:00:03"}}, fleet.ErrInvalid},
		{"bad label", fleet.Host{Name: "r1-n4", MACs: []string{"52:54:00:aa:00:04"}, Labels: map[string]string{"rack": "a b"}}, fleet.ErrInvalid},
		{"ip taken", fleet.Host{Name: "r1-n5", MACs: []string{"52:54:00:aa:00:05"}, IP: netip.MustParsePrefix("198.18.0.10/24")}, fleet.ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.CreateHost(ctx, tc.host); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	got, err := s.HostByMAC(ctx, "52:54:00:aa:00:01")
	if err != nil || got.Name != "r1-n1" {
		t.Fatalf("HostByMAC: %v %v", got.Name, err)
	}
	if _, err := s.UpdateHost(ctx, "r1-n1", func(h *fleet.Host) error { h.MACs = []string{"52:54:00:aa:00:02"}; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HostByMAC(ctx, "52:54:00:aa:00:01"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("old mac still indexed: %v", err)
	}
	sel, _ := fleet.ParseSelector("rack=r1")
	if hs, _ := s.ListHosts(ctx, sel); len(hs) != 1 {
		t.Fatalf("ListHosts rack=r1: %d hosts", len(hs))
	}
	if err := s.DeleteHost(ctx, "r1-n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HostByMAC(ctx, "52:54:00:aa:00:02"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("mac of deleted host still indexed: %v", err)
	}
	if _, err := s.HostByIP(ctx, netip.MustParseAddr("198.18.0.10")); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("ip of deleted host still indexed: %v", err)
	}
}

func TestFixedIPIndex(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	setIP := func(p string) func(*fleet.Host) error {
		return func(h *fleet.Host) error {
			h.IP = netip.Prefix{}
			if p != "" {
				h.IP = netip.MustParsePrefix(p)
			}
			return nil
		}
	}
	for i, p := range []string{"198.18.0.10/24", "198.18.0.11/24", ""} {
		h := fleet.Host{Name: fmt.Sprintf("n%d", i+1), MACs: []string{fmt.Sprintf("52:54:00:aa:00:%02x", i+1)}}
		if p != "" {
			h.IP = netip.MustParsePrefix(p)
		}
		if _, err := s.CreateHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	owner := func(a string) string {
		t.Helper()
		h, err := s.HostByIP(ctx, ip(a))
		if errors.Is(err, fleet.ErrNotFound) {
			return ""
		}
		if err != nil {
			t.Fatalf("HostByIP %s: %v", a, err)
		}
		return h.Name
	}
	steps := []struct {
		name, host, ip string
		want           error
		owners         map[string]string
	}{
		{"take another's ip", "n3", "198.18.0.10/24", fleet.ErrConflict, map[string]string{"198.18.0.10": "n1"}},
		{"keep own ip, new prefix", "n1", "198.18.0.10/16", nil, map[string]string{"198.18.0.10": "n1"}},
		{"move", "n1", "198.18.0.12/24", nil, map[string]string{"198.18.0.10": "", "198.18.0.12": "n1"}},
		{"freed ip taken", "n3", "198.18.0.10/24", nil, map[string]string{"198.18.0.10": "n3"}},
		{"drop ip", "n2", "", nil, map[string]string{"198.18.0.11": ""}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			_, err := s.UpdateHost(ctx, st.host, setIP(st.ip))
			if !errors.Is(err, st.want) {
				t.Fatalf("UpdateHost %s ip %q: got %v, want %v", st.host, st.ip, err, st.want)
			}
			if st.want != nil && !strings.Contains(err.Error(), "belongs to host n1") {
				t.Errorf("error %q does not name the owner", err)
			}
			for a, want := range st.owners {
				if got := owner(a); got != want {
					t.Errorf("owner of %s = %q, want %q", a, got, want)
				}
			}
		})
	}
}

// A host and its secret are stored together or not at all, and an update
// replaces or deletes the secret with the host.
func TestHostSecretsAtomic(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	if _, err := s.CreateHostSecret(ctx, fleet.Host{Name: "a", MACs: []string{"52:54:00:aa:00:01"}}, []byte("sealed-a")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateHostSecret(ctx, fleet.Host{Name: "b", MACs: []string{"52:54:00:aa:00:01"}}, []byte("sealed-b")); !errors.Is(err, fleet.ErrConflict) {
		t.Fatalf("create with a taken MAC: %v", err)
	}
	if _, err := s.Secret(ctx, "b"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("the refused host's secret was stored: %v", err)
	}
	refuse := func(*fleet.Host) error { return fleet.ErrInvalid }
	if _, err := s.UpdateHostSecret(ctx, "a", refuse, []byte("sealed-a2")); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatal(err)
	}
	secret := func() string {
		got, err := s.Secret(ctx, "a")
		if errors.Is(err, fleet.ErrNotFound) {
			return "none"
		}
		return string(got)
	}
	if got := secret(); got != "sealed-a" {
		t.Fatalf("after a refused update the secret is %q", got)
	}
	keep := func(*fleet.Host) error { return nil }
	for _, step := range []struct {
		sealed []byte
		want   string
	}{{[]byte("sealed-a3"), "sealed-a3"}, {nil, "none"}} {
		if _, err := s.UpdateHostSecret(ctx, "a", keep, step.sealed); err != nil {
			t.Fatal(err)
		}
		if got := secret(); got != step.want {
			t.Fatalf("secret %q, want %q", got, step.want)
		}
	}
}

// A schema 1 file has no IP index: Open builds it, keeping the first of two
// hosts that share an IP, and the file is then schema 2.
func TestUpgradeSchema1(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	hosts := []fleet.Host{
		{Name: "a", MACs: []string{"52:54:00:aa:00:01"}, IP: netip.MustParsePrefix("198.18.0.10/24")},
		{Name: "b", MACs: []string{"52:54:00:aa:00:02"}, IP: netip.MustParsePrefix("198.18.0.10/24")},
		{Name: "c", MACs: []string{"52:54:00:aa:00:03"}, IP: netip.MustParsePrefix("198.18.0.12/24")},
	}
	// Write the schema 1 layout by hand: hosts, no "ips" bucket.
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, h := range hosts {
			if err := putJSON(tx.Bucket(bHosts), []byte(h.Name), h); err != nil {
				return err
			}
		}
		if err := tx.DeleteBucket(bIPs); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(kSchema, u64(1))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	var logs strings.Builder
	s, err = Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for ip, want := range map[string]string{"198.18.0.10": "a", "198.18.0.12": "c"} {
		if h, err := s.HostByIP(ctx, netip.MustParseAddr(ip)); err != nil || h.Name != want {
			t.Errorf("HostByIP %s = %q, %v; want %s", ip, h.Name, err, want)
		}
	}
	if !strings.Contains(logs.String(), "two hosts share a fixed IP") || !strings.Contains(logs.String(), "host=b") {
		t.Errorf("duplicate IP not logged: %s", logs.String())
	}
	// b, not indexed, can still be changed and removed without taking the
	// address from a.
	if _, err := s.UpdateHost(ctx, "b", func(h *fleet.Host) error { h.Labels = map[string]string{"rack": "r2"}; return nil }); err != nil {
		t.Fatalf("label change of b: %v", err)
	}
	if err := s.DeleteHost(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if h, err := s.HostByIP(ctx, netip.MustParseAddr("198.18.0.10")); err != nil || h.Name != "a" {
		t.Errorf("after b changed and left, 198.18.0.10 = %q, %v; want a", h.Name, err)
	}
	var schema uint64
	_ = s.db.View(func(tx *bolt.Tx) error { schema = binary.BigEndian.Uint64(tx.Bucket(bMeta).Get(kSchema)); return nil })
	if schema != SchemaVersion {
		t.Errorf("schema after upgrade = %d, want %d", schema, SchemaVersion)
	}
}

func TestAssignHistoryPersists(t *testing.T) {
	ctx := context.Background()
	s, path := openTest(t)
	for _, im := range []fleet.Image{img("deb", "1", "a"), img("deb", "2", "b")} {
		if _, _, err := s.PutImage(ctx, im); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateHost(ctx, fleet.Host{Name: "h1", MACs: []string{"52:54:00:00:00:01"}}); err != nil {
		t.Fatal(err)
	}
	steps := []struct{ ref, want string }{{"deb@1", "deb@1"}, {"deb@1", "deb@1"}, {"deb", "deb@2"}}
	for _, st := range steps {
		if err := s.Assign(ctx, []string{"h1"}, st.ref, "alice", "test"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Assign(ctx, []string{"h1"}, "deb@9", "alice", ""); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("assign unknown image: %v", err)
	}
	if err := s.Assign(ctx, []string{"h1", "nope"}, "deb@1", "alice", ""); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("assign with unknown host: %v", err)
	}
	s.Close()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, _ := s.GetHost(ctx, "h1")
	if h.DesiredImage != "deb@2" {
		t.Fatalf("desired after reopen = %q (the failed assign must not have applied)", h.DesiredImage)
	}
	hist, _ := s.History(ctx, "h1")
	if len(hist) != 2 || hist[0].To != "deb@1" || hist[1].From != "deb@1" || hist[1].To != "deb@2" || hist[1].Actor != "alice" {
		t.Fatalf("history = %+v", hist)
	}
	if prev, ok := fleet.PreviousImage(hist, h.DesiredImage); !ok || prev != "deb@1" {
		t.Fatalf("previous = %q %v", prev, ok)
	}
	if _, err := s.DeleteImage(ctx, "deb@1", time.Time{}); !errors.Is(err, fleet.ErrInUse) {
		t.Fatalf("delete image in history: %v", err)
	}
	if _, err := s.DeleteImage(ctx, "deb@1", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("delete image outside retention: %v", err)
	}
}

func TestImagesImmutable(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	if _, created, err := s.PutImage(ctx, img("deb", "1", "a")); err != nil || !created {
		t.Fatal(created, err)
	}
	if _, created, err := s.PutImage(ctx, img("deb", "1", "a")); err != nil || created {
		t.Fatalf("same content again: created=%v err=%v", created, err)
	}
	if _, _, err := s.PutImage(ctx, img("deb", "1", "b")); !errors.Is(err, fleet.ErrConflict) {
		t.Fatalf("other content: %v", err)
	}
	if _, _, err := s.PutImage(ctx, img("deb", "2", "a")); err != nil {
		t.Fatal(err)
	}
	latest, err := s.Image(ctx, "deb@latest")
	if err != nil || latest.Version != "2" {
		t.Fatalf("latest = %v %v", latest.Ref, err)
	}
	// Rootfs "a" is shared by both versions: deleting one keeps the blob.
	freed, err := s.DeleteImage(ctx, "deb@1", time.Time{})
	if err != nil || len(freed) != 0 {
		t.Fatalf("freed %v %v", freed, err)
	}
	freed, err = s.DeleteImage(ctx, "deb@2", time.Time{})
	if err != nil || len(freed) != 2 {
		t.Fatalf("freed %v %v", freed, err)
	}
}

func TestBootReports(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	im := img("deb", "1", "a")
	s.PutImage(ctx, im)
	s.CreateHost(ctx, fleet.Host{Name: "h1", MACs: []string{"52:54:00:00:00:01"}})
	old, _ := s.IssueBoot(ctx, "h1", "52:54:00:00:00:01", im)
	tok, err := s.IssueBoot(ctx, "h1", "52:54:00:00:00:01", im)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		phase string
		want  error
	}{
		{"unknown token", "nope", fleet.PhaseNetwork, fleet.ErrNotFound},
		{"superseded token", old, fleet.PhaseNetwork, fleet.ErrStale},
		{"bad phase", tok, "dancing", fleet.ErrInvalid},
		{"network", tok, fleet.PhaseNetwork, nil},
		{"booted", tok, fleet.PhaseBooted, nil},
		{"after booted", tok, fleet.PhaseFailed, fleet.ErrStale},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.RecordReport(ctx, tc.token, fleet.BootReport{Phase: tc.phase, Digest: im.Rootfs.Digest})
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	h, _ := s.GetHost(ctx, "h1")
	if h.BootedImage != "deb@1" || h.BootedDigest != im.Rootfs.Digest || h.LastReport.Phase != fleet.PhaseBooted {
		t.Fatalf("host after booted: %+v", h)
	}
	reps, _ := s.Reports(ctx, "h1", 0)
	if len(reps) != 2 {
		t.Fatalf("reports = %d", len(reps))
	}
}

func TestEvents(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	for i := range 5 {
		s.AppendEvent(ctx, fleet.Event{Kind: "assign", Host: fmt.Sprintf("h%d", i%2), Message: "x"})
	}
	all, _ := s.Events(ctx, EventFilter{})
	h1, _ := s.Events(ctx, EventFilter{Host: "h1"})
	last, _ := s.Events(ctx, EventFilter{Limit: 2})
	if len(all) != 5 || len(h1) != 2 || len(last) != 2 || last[1].Seq != 5 {
		t.Fatalf("events: all=%d h1=%d last=%+v", len(all), len(h1), last)
	}
}
