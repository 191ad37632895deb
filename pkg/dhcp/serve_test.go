package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

func loopbackConfig() Config {
	return Config{
		ServerIP:  netip.MustParseAddr("127.0.0.1"),
		Discovery: true,
		Pool: &Pool{
			Subnet: netip.MustParsePrefix("127.0.0.0/8"),
			Start:  netip.MustParseAddr("127.0.0.10"),
			End:    netip.MustParseAddr("127.0.0.20"),
		},
	}
}

func startServe(t *testing.T, s *Server) (net.Addr, context.CancelFunc, <-chan error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(cancel)
	return conn.LocalAddr(), cancel, done
}

func exchange(t *testing.T, c net.PacketConn, to net.Addr, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	if _, err := c.WriteTo(req.ToBytes(), to); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	resp, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestServeLoopback(t *testing.T) {
	reg := prometheus.NewRegistry()
	leases := newMemLeases()
	s, err := New(loopbackConfig(), newFakeHosts(), leases, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv, cancel, done := startServe(t, s)
	// The client "has" 127.0.0.10 and renews it by unicast: the reply comes
	// back to its own socket.
	cl, err := net.ListenPacket("udp4", "127.0.0.10:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// Garbage first: counted and dropped, the server keeps serving.
	for _, junk := range [][]byte{{1, 2, 3}, make([]byte, 300)} {
		if _, err := cl.WriteTo(junk, srv); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		req  *dhcpv4.DHCPv4
		want dhcpv4.MessageType
		ip   string
	}{
		{"renew", msg(dhcpv4.MessageTypeRequest, macA, ciaddr("127.0.0.10")), dhcpv4.MessageTypeAck, "127.0.0.10"},
		{"renew again", msg(dhcpv4.MessageTypeRequest, macA, ciaddr("127.0.0.10")), dhcpv4.MessageTypeAck, "127.0.0.10"},
		{"inform", msg(dhcpv4.MessageTypeInform, macA, ciaddr("127.0.0.10")), dhcpv4.MessageTypeAck, "0.0.0.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := exchange(t, cl, srv, tc.req)
			if resp.MessageType() != tc.want || resp.YourIPAddr.String() != tc.ip || resp.TransactionID != tc.req.TransactionID {
				t.Fatalf("got %s yiaddr %s xid %s", resp.MessageType(), resp.YourIPAddr, resp.TransactionID)
			}
		})
	}
	stored, err := leases.Leases(context.Background())
	if err != nil || len(stored) != 1 || stored[0].IP != netip.MustParseAddr("127.0.0.10") || stored[0].MAC != macA {
		t.Fatalf("stored leases %+v, %v", stored, err)
	}
	// Counters are bumped just after the reply is written: poll briefly.
	waitCount := func(c prometheus.Counter, want float64) float64 {
		got := testutil.ToFloat64(c)
		for i := 0; i < 500 && got != want; i++ {
			time.Sleep(10 * time.Millisecond)
			got = testutil.ToFloat64(c)
		}
		return got
	}
	if got := waitCount(s.m.dropped.WithLabelValues("parse"), 2); got != 2 {
		t.Errorf("dropped{parse} = %v, want 2", got)
	}
	if got := waitCount(s.m.packets.WithLabelValues("request", "ack"), 2); got != 2 {
		t.Errorf("packets{request,ack} = %v, want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "kiln_dhcp_leases_in_use"); err != nil || n != 1 {
		t.Errorf("leases_in_use: %d series, %v", n, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// blockingHosts holds every lookup until release is closed.
type blockingHosts struct {
	release chan struct{}
}

func (b blockingHosts) HostByMAC(ctx context.Context, mac string) (fleet.Host, error) {
	<-b.release
	return fleet.Host{}, fleet.ErrNotFound
}
func (b blockingHosts) HostByIP(context.Context, netip.Addr) (fleet.Host, error) {
	return fleet.Host{}, fleet.ErrNotFound
}
func (b blockingHosts) RecordBootMode(context.Context, string, string) error { return nil }

func TestServeIsBoundedUnderFlood(t *testing.T) {
	cfg := loopbackConfig()
	cfg.Workers = 2
	hosts := blockingHosts{release: make(chan struct{})}
	s, err := New(cfg, hosts, newMemLeases(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, cancel, done := startServe(t, s)
	cl, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pkt := msg(dhcpv4.MessageTypeDiscover, macA).ToBytes()
	overload := s.m.dropped.WithLabelValues("overload")
	// 2 handlers blocked + 2 queued; everything else must be dropped, not
	// piled up in goroutines.
	for i := 0; i < 1000 && testutil.ToFloat64(overload) == 0; i++ {
		cl.WriteTo(pkt, srv)
		time.Sleep(time.Millisecond)
	}
	if testutil.ToFloat64(overload) == 0 {
		t.Fatal("no packet was dropped for overload with all workers blocked")
	}
	close(hosts.release)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestServeReturnsReadError(t *testing.T) {
	s, err := New(loopbackConfig(), newFakeHosts(), newMemLeases(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if err := s.Serve(context.Background(), conn); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve on a closed conn = %v, want net.ErrClosed", err)
	}
}

func TestListenInterface(t *testing.T) {
	if _, err := ListenInterface("kiln-no-such0", 0); err == nil {
		t.Fatal("ListenInterface on a missing interface succeeded")
	}
	if os.Geteuid() != 0 {
		t.Skip("binding to a device needs root (CAP_NET_RAW)")
	}
	c, err := ListenInterface("lo", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.LocalAddr().(*net.UDPAddr).Port == 0 {
		t.Fatal("no port")
	}
}

func TestFirstIPv4(t *testing.T) {
	tests := []struct {
		ifname string
		want   string // "" = error
	}{
		{"lo", "127.0.0.1"},
		{"kiln-no-such0", ""},
	}
	for _, tc := range tests {
		t.Run(tc.ifname, func(t *testing.T) {
			got, err := FirstIPv4(tc.ifname)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("FirstIPv4(%s) = %s, want an error", tc.ifname, got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("FirstIPv4(%s) = %s, %v; want %s", tc.ifname, got, err, tc.want)
			}
		})
	}
}
