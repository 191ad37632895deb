package dhcp

import (
	"context"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/immutableinfra/kiln/pkg/store"
)

// benchDORA runs DISCOVER+REQUEST for a fresh MAC per iteration against a
// discovery server with a /15 pool, wire format included (parse + marshal),
// as Serve does it minus the socket.
func benchDORA(b *testing.B, leases LeaseStore, parallelism int) {
	cfg := testConfig(&clock{t: t0})
	cfg.Now = time.Now
	cfg.Discovery = true
	cfg.Pool.Start = netip.MustParseAddr("198.18.0.10")
	cfg.Pool.End = netip.MustParseAddr("198.19.255.250")
	s, err := New(cfg, newFakeHosts(), leases, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	disc := msg(dhcpv4.MessageTypeDiscover, macA, vendor(vendorBIOS), arch(0)).ToBytes()
	var n atomic.Uint32
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, len(disc))
		for pb.Next() {
			i := n.Add(1)
			copy(buf, disc)
			copy(buf[28+2:28+6], []byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
			req, err := dhcpv4.FromBytes(buf)
			if err != nil {
				b.Fatal(err)
			}
			offer, err := s.Handle(ctx, req)
			if err != nil || offer == nil {
				b.Fatalf("offer: %v %v", offer, err)
			}
			offer.ToBytes()
			r := msg(dhcpv4.MessageTypeRequest, macA, requested(offer.YourIPAddr.String()), sid("198.18.0.1"))
			r.ClientHWAddr = req.ClientHWAddr
			rb := r.ToBytes()
			req2, err := dhcpv4.FromBytes(rb)
			if err != nil {
				b.Fatal(err)
			}
			ack, err := s.Handle(ctx, req2)
			if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				b.Fatalf("ack: %v %v", ack, err)
			}
			ack.ToBytes()
		}
	})
}

func BenchmarkDORAMemory(b *testing.B) { benchDORA(b, newMemLeases(), 1) }

// BenchmarkDORABbolt persists every ACK with fsync; many concurrent handlers
// share bbolt batches, as Serve's workers do.
func BenchmarkDORABbolt(b *testing.B) {
	st, err := store.Open(filepath.Join(b.TempDir(), "kiln.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchDORA(b, st, 64)
}
