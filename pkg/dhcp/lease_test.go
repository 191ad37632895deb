package dhcp

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/store"
)

const (
	macA = "02:00:00:00:00:0a"
	macB = "02:00:00:00:00:0b"
	macC = "02:00:00:00:00:0c"
)

// env is a discovery-mode server over a small pool.
type env struct {
	t      *testing.T
	s      *Server
	clk    *clock
	leases LeaseStore
	hosts  *fakeHosts
}

func newEnv(t *testing.T, end string, leases LeaseStore, clk *clock) *env {
	t.Helper()
	if clk == nil {
		clk = &clock{t: t0}
	}
	cfg := testConfig(clk)
	cfg.Discovery = true
	cfg.Pool.End = netip.MustParseAddr(end)
	hosts := testHosts()
	s, err := New(cfg, hosts, leases, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, s: s, clk: clk, leases: leases, hosts: hosts}
}

func (e *env) handle(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	e.t.Helper()
	resp, err := e.s.Handle(context.Background(), req)
	if err != nil {
		e.t.Fatalf("Handle(%s): %v", describeRequest(req), err)
	}
	return resp
}

// discover returns the offered address, or the zero Addr for no reply.
func (e *env) discover(mac string, opts ...clientOpt) netip.Addr {
	e.t.Helper()
	resp := e.handle(msg(dhcpv4.MessageTypeDiscover, mac, opts...))
	if resp == nil {
		return netip.Addr{}
	}
	if resp.MessageType() != dhcpv4.MessageTypeOffer {
		e.t.Fatalf("DISCOVER from %s: got %s", mac, resp.MessageType())
	}
	return toAddr(resp.YourIPAddr)
}

// request sends a SELECTING/INIT-REBOOT request and returns ACK or NAK.
func (e *env) request(mac string, ip netip.Addr, opts ...clientOpt) dhcpv4.MessageType {
	e.t.Helper()
	resp := e.handle(msg(dhcpv4.MessageTypeRequest, mac, append([]clientOpt{requested(ip.String())}, opts...)...))
	if resp == nil {
		return dhcpv4.MessageTypeNone
	}
	return resp.MessageType()
}

func (e *env) dora(mac string) netip.Addr {
	e.t.Helper()
	ip := e.discover(mac)
	if !ip.IsValid() {
		e.t.Fatalf("no offer for %s", mac)
	}
	if got := e.request(mac, ip, sid("198.18.0.1")); got != dhcpv4.MessageTypeAck {
		e.t.Fatalf("REQUEST %s for %s: got %s", mac, ip, got)
	}
	return ip
}

func (e *env) stored() map[netip.Addr]fleet.Lease {
	e.t.Helper()
	ls, err := e.leases.Leases(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[netip.Addr]fleet.Lease{}
	for _, l := range ls {
		m[l.IP] = l
	}
	return m
}

func TestLeaseLifecycle(t *testing.T) {
	tests := []struct {
		name string
		end  string // pool is 198.18.1.10 .. end
		run  func(t *testing.T, e *env)
	}{
		{
			name: "an address is never given to two MACs",
			end:  "198.18.1.20",
			run: func(t *testing.T, e *env) {
				a := e.dora(macA)
				b := e.discover(macB, requested(a.String()))
				if b == a {
					t.Fatalf("offered %s to B while A holds it", a)
				}
				if got := e.request(macB, a); got != dhcpv4.MessageTypeNak {
					t.Fatalf("B requesting A's %s: got %s, want NAK", a, got)
				}
				if l := e.stored()[a]; l.MAC != macA {
					t.Fatalf("stored lease of %s = %+v, want A's", a, l)
				}
			},
		},
		{
			name: "a host's fixed IP inside the range is never offered or acked",
			end:  "198.18.1.12",
			run: func(t *testing.T, e *env) {
				fixed := netip.MustParseAddr("198.18.1.11")
				e.hosts.add(fleet.Host{Name: "n-fixed", MACs: []string{"02:00:00:00:00:ff"}, IP: netip.PrefixFrom(fixed, 15)})
				if a := e.discover(macA, requested(fixed.String())); a == fixed || !a.IsValid() {
					t.Fatalf("A asking for the fixed %s was offered %v", fixed, a)
				}
				e.dora(macA)
				e.dora(macB)
				if c := e.discover(macC); c.IsValid() {
					t.Fatalf("C offered %s; the range's only other address is fixed", c)
				}
				if got := e.request(macC, fixed); got != dhcpv4.MessageTypeNak {
					t.Fatalf("C requesting the fixed %s: got %s, want NAK", fixed, got)
				}
				e.clk.Add(e.s.cfg.DeclineHold + time.Second)
				if c := e.discover(macC); c.IsValid() {
					t.Fatalf("after the hold C was offered %s", c)
				}
				if _, ok := e.stored()[fixed]; ok {
					t.Fatalf("a lease for the fixed %s was stored", fixed)
				}
			},
		},
		{
			name: "an address that becomes a host's fixed IP is taken back at renewal",
			end:  "198.18.1.20",
			run: func(t *testing.T, e *env) {
				a := e.dora(macA)
				e.hosts.add(fleet.Host{Name: "n-fixed", MACs: []string{"02:00:00:00:00:ff"}, IP: netip.PrefixFrom(a, 15)})
				if got := e.request(macA, a); got != dhcpv4.MessageTypeNak {
					t.Fatalf("A renewing %s, now n-fixed's: got %s, want NAK", a, got)
				}
				if b := e.dora(macA); b == a {
					t.Fatalf("A got n-fixed's %s again", a)
				}
			},
		},
		{
			name: "a MAC keeps its address across DORA and renewal",
			end:  "198.18.1.20",
			run: func(t *testing.T, e *env) {
				a := e.dora(macA)
				if again := e.dora(macA); again != a {
					t.Fatalf("second DORA gave %s, first %s", again, a)
				}
				resp := e.handle(msg(dhcpv4.MessageTypeRequest, macA, ciaddr(a.String())))
				if resp == nil || resp.MessageType() != dhcpv4.MessageTypeAck || toAddr(resp.YourIPAddr) != a {
					t.Fatalf("renewal: %v", resp)
				}
				if l := e.stored()[a]; !l.Expires.Equal(t0.Add(time.Hour)) {
					t.Fatalf("lease expires %v, want %v", l.Expires, t0.Add(time.Hour))
				}
			},
		},
		{
			name: "expired leases are reused",
			end:  "198.18.1.11",
			run: func(t *testing.T, e *env) {
				a, b := e.dora(macA), e.dora(macB)
				if ip := e.discover(macC); ip.IsValid() {
					t.Fatalf("pool of 2 with 2 leases offered %s", ip)
				}
				e.clk.Add(2 * time.Hour)
				c := e.dora(macC)
				if c != a && c != b {
					t.Fatalf("C got %s, want one of the expired %s %s", c, a, b)
				}
				st := e.stored()
				if st[c].MAC != macC {
					t.Fatalf("stored %s = %+v, want C", c, st[c])
				}
			},
		},
		{
			name: "release frees the address",
			end:  "198.18.1.10",
			run: func(t *testing.T, e *env) {
				a := e.dora(macA)
				if resp := e.handle(msg(dhcpv4.MessageTypeRelease, macB, ciaddr(a.String()))); resp != nil {
					t.Fatalf("RELEASE got a reply")
				}
				if _, ok := e.stored()[a]; !ok {
					t.Fatal("a RELEASE by another MAC removed the lease")
				}
				e.handle(msg(dhcpv4.MessageTypeRelease, macA, ciaddr(a.String())))
				if _, ok := e.stored()[a]; ok {
					t.Fatal("lease still stored after RELEASE")
				}
				if b := e.dora(macB); b != a {
					t.Fatalf("B got %s, want the released %s", b, a)
				}
			},
		},
		{
			name: "declined addresses rest for DeclineHold",
			end:  "198.18.1.11",
			run: func(t *testing.T, e *env) {
				a := e.dora(macA)
				e.handle(msg(dhcpv4.MessageTypeDecline, macA, requested(a.String())))
				if l := e.stored()[a]; !l.Declined || l.MAC != "" {
					t.Fatalf("stored %s = %+v, want declined without MAC", a, l)
				}
				a2 := e.dora(macA)
				if a2 == a {
					t.Fatalf("declined %s offered again at once", a)
				}
				if ip := e.discover(macB); ip.IsValid() {
					t.Fatalf("offered %s while the other address is declined", ip)
				}
				e.clk.Add(11 * time.Minute)
				if b := e.discover(macB); b != a {
					t.Fatalf("after DeclineHold B was offered %s, want %s", b, a)
				}
			},
		},
		{
			name: "offers are held, then reclaimed",
			end:  "198.18.1.10",
			run: func(t *testing.T, e *env) {
				a := e.discover(macA)
				if ip := e.discover(macB); ip.IsValid() {
					t.Fatalf("offered %s to B during A's offer hold", ip)
				}
				e.clk.Add(31 * time.Second)
				if b := e.discover(macB); b != a {
					t.Fatalf("after OfferHold B was offered %s, want %s", b, a)
				}
				if got := e.request(macA, a); got != dhcpv4.MessageTypeNak {
					t.Fatalf("A requesting its stale offer now held for B: %s, want NAK", got)
				}
			},
		},
		{
			name: "choosing another server cancels the offer",
			end:  "198.18.1.10",
			run: func(t *testing.T, e *env) {
				a := e.discover(macA)
				if got := e.request(macA, a, sid("198.18.0.9")); got != dhcpv4.MessageTypeNone {
					t.Fatalf("REQUEST to another server answered with %s", got)
				}
				if b := e.discover(macB); b != a {
					t.Fatalf("B offered %s, want the cancelled %s", b, a)
				}
			},
		},
		{
			name: "fixed-IP hosts do not touch the pool",
			end:  "198.18.1.10",
			run: func(t *testing.T, e *env) {
				resp := e.handle(msg(dhcpv4.MessageTypeDiscover, macIPXE))
				if got := toAddr(resp.YourIPAddr); got != netip.MustParseAddr("198.18.0.50") {
					t.Fatalf("fixed host offered %s", got)
				}
				e.request(macIPXE, netip.MustParseAddr("198.18.0.50"))
				if len(e.stored()) != 0 {
					t.Fatalf("fixed host wrote a lease: %v", e.stored())
				}
				e.dora(macA) // the only pool address is still free
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newEnv(t, tc.end, newMemLeases(), nil))
		})
	}
}

// TestLeasesSurviveRestart runs against a real bbolt file.
func TestLeasesSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: t0}
	e := newEnv(t, "198.18.1.20", st, clk)
	a := e.dora(macA)
	b := e.dora(macB)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	e2 := newEnv(t, "198.18.1.20", st2, clk)
	c := e2.dora(macC)
	if c == a || c == b {
		t.Fatalf("after restart C got %s, held by A (%s) or B (%s)", c, a, b)
	}
	if got := e2.discover(macA); got != a {
		t.Fatalf("after restart A was offered %s, want its lease %s", got, a)
	}
	if got := e2.request(macB, a); got != dhcpv4.MessageTypeNak {
		t.Fatalf("after restart B requesting A's address: %s, want NAK", got)
	}
}

func TestHandleErrors(t *testing.T) {
	t.Run("store failure sends no ACK and frees the address", func(t *testing.T) {
		ml := newMemLeases()
		e := newEnv(t, "198.18.1.10", ml, nil)
		a := e.discover(macA)
		ml.fail = true
		_, err := e.s.Handle(context.Background(), msg(dhcpv4.MessageTypeRequest, macA, requested(a.String())))
		if !errors.Is(err, ErrLeaseStore) {
			t.Fatalf("err = %v, want ErrLeaseStore", err)
		}
		ml.fail = false
		if b := e.dora(macB); b != a {
			t.Fatalf("B got %s, want %s freed after the failed write", b, a)
		}
	})
	t.Run("fixed-IP lookup failure sends no offer and keeps the address free", func(t *testing.T) {
		e := newEnv(t, "198.18.1.10", newMemLeases(), nil)
		e.hosts.failIP = true
		_, err := e.s.Handle(context.Background(), msg(dhcpv4.MessageTypeDiscover, macA))
		if !errors.Is(err, ErrHostLookup) {
			t.Fatalf("err = %v, want ErrHostLookup", err)
		}
		e.hosts.failIP = false
		if b := e.dora(macB); b != netip.MustParseAddr("198.18.1.10") {
			t.Fatalf("B got %s, want the pool's only address", b)
		}
	})
	t.Run("host lookup failure", func(t *testing.T) {
		e := newEnv(t, "198.18.1.10", newMemLeases(), nil)
		e.hosts.failOn = macA
		_, err := e.s.Handle(context.Background(), msg(dhcpv4.MessageTypeDiscover, macA))
		if !errors.Is(err, ErrHostLookup) {
			t.Fatalf("err = %v, want ErrHostLookup", err)
		}
	})
}

func TestPoolSweepFindsFreeAddressAmongMany(t *testing.T) {
	// A /16-sized range: every DISCOVER must find an address without a
	// linear scan per packet (checked by the benchmark; here correctness).
	cfg := testConfig(&clock{t: t0})
	cfg.Discovery = true
	cfg.Pool.End = netip.MustParseAddr("198.19.255.254")
	s, err := New(cfg, newFakeHosts(), newMemLeases(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for i := range 2000 {
		mac := []byte{2, 0, 0, 0, byte(i >> 8), byte(i)}
		req := msg(dhcpv4.MessageTypeDiscover, "02:00:00:00:00:00")
		req.ClientHWAddr = mac
		resp, err := s.Handle(context.Background(), req)
		if err != nil || resp == nil {
			t.Fatalf("discover %d: %v %v", i, resp, err)
		}
		ip := toAddr(resp.YourIPAddr)
		if seen[ip] {
			t.Fatalf("%s offered twice", ip)
		}
		if ip == netip.MustParseAddr("198.18.0.1") || !cfg.Pool.Subnet.Contains(ip) {
			t.Fatalf("offered %s", ip)
		}
		seen[ip] = true
	}
}

// The bbolt store is the production LeaseStore and Hosts.
var (
	_ LeaseStore = (*store.Store)(nil)
	_ Hosts      = (*store.Store)(nil)
)
