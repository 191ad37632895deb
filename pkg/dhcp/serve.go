package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
)

// maxPacket is the largest datagram read; longer ones are truncated and then
// fail to parse.
const maxPacket = 1500

type packet struct {
	buf  *[maxPacket]byte
	n    int
	from net.Addr
}

// Serve reads requests from conn (bound to port 67, or 4011 for proxyDHCP
// boot-server requests) and answers them until ctx is cancelled, then waits
// for in-flight handlers and returns nil. Config.Workers goroutines handle
// packets from a queue of 64 per worker; packets that find the queue full
// are dropped and counted. An ACK is written by one of at most
// Config.PendingACKs goroutines once its lease is durable. A packet that
// does not parse is counted and dropped. Serve does not close conn; only a
// read error other than the cancellation ends it early, with that error.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	workers := s.cfg.Workers
	queue := make(chan packet, 64*workers)
	bufs := sync.Pool{New: func() any { return new([maxPacket]byte) }}
	var wg, commits sync.WaitGroup
	slots := make(chan struct{}, s.cfg.PendingACKs)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range queue {
				s.serveOne(ctx, conn, p, slots, &commits)
				bufs.Put(p.buf)
			}
		}()
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	var rerr error
	for {
		buf := bufs.Get().(*[maxPacket]byte)
		n, from, err := conn.ReadFrom(buf[:])
		if err != nil {
			bufs.Put(buf)
			if ctx.Err() == nil {
				rerr = fmt.Errorf("dhcp: read: %w", err)
			}
			break
		}
		select {
		case queue <- packet{buf: buf, n: n, from: from}:
		default:
			s.m.dropped.WithLabelValues("overload").Inc()
			bufs.Put(buf)
		}
	}
	close(queue)
	wg.Wait()
	commits.Wait()
	return rerr
}

func (s *Server) serveOne(ctx context.Context, conn net.PacketConn, p packet, slots chan struct{}, commits *sync.WaitGroup) {
	defer func() {
		// Handle is fuzzed never to panic; this keeps a daemon alive if a
		// future bug slips through, and counts it.
		if r := recover(); r != nil {
			s.m.dropped.WithLabelValues("panic").Inc()
			s.log.Error("dhcp: handler panic", "panic", fmt.Sprint(r))
		}
	}()
	start := time.Now()
	req, err := dhcpv4.FromBytes(p.buf[:p.n])
	if err != nil {
		s.m.dropped.WithLabelValues("parse").Inc()
		if s.debug {
			s.log.Debug("dhcp: unparsable packet", "from", p.from.String(), "err", err)
		}
		return
	}
	var pend pending
	resp, outcome, err := s.handle(ctx, req, &pend)
	if err != nil {
		s.log.Error("dhcp: request not answered", "mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(), "err", err)
	}
	if pend.lease.IP.IsValid() {
		// The ACK waits for its lease to be durable, off the worker.
		select {
		case slots <- struct{}{}:
		default:
			s.pool.commit(pend.off, pend.lease.MAC, "", "", false)
			s.m.dropped.WithLabelValues("pending_acks").Inc()
			s.m.packets.WithLabelValues(msgType(req), "dropped").Inc()
			return
		}
		commits.Add(1)
		go func() {
			defer func() { <-slots; commits.Done() }()
			// Not cancelled with Serve: an ACK already decided is finished
			// (stored and sent) during shutdown rather than lost.
			if err := s.persist(context.WithoutCancel(ctx), &pend); err != nil {
				s.log.Error("dhcp: request not answered", "mac", req.ClientHWAddr.String(), "xid", req.TransactionID.String(), "err", err)
				s.finish(conn, req, nil, "error", p.from, start)
				return
			}
			s.finish(conn, req, resp, outcome, p.from, start)
		}()
		return
	}
	s.finish(conn, req, resp, outcome, p.from, start)
}

// finish sends resp (if any) and counts the request.
func (s *Server) finish(conn net.PacketConn, req, resp *dhcpv4.DHCPv4, outcome string, from net.Addr, start time.Time) {
	if resp != nil {
		if _, werr := conn.WriteTo(resp.ToBytes(), destination(req, resp, from)); werr != nil {
			s.m.dropped.WithLabelValues("write").Inc()
			if !errors.Is(werr, net.ErrClosed) {
				s.log.Warn("dhcp: write reply", "mac", req.ClientHWAddr.String(), "err", werr)
			}
			outcome = "write_error"
		}
	}
	s.m.packets.WithLabelValues(msgType(req), outcome).Inc()
	s.m.duration.Observe(time.Since(start).Seconds())
}

// destination is where a reply goes (RFC 2131 4.1): the relay's server
// port; a NAK or an address-less client gets a broadcast; a client with an
// address gets a unicast back to where it sent from.
func destination(req, resp *dhcpv4.DHCPv4, from net.Addr) net.Addr {
	if gi := giaddr(req); gi.IsValid() {
		return &net.UDPAddr{IP: net.IP(gi.AsSlice()), Port: dhcpv4.ServerPort}
	}
	if resp.MessageType() != dhcpv4.MessageTypeNak && toAddr(req.ClientIPAddr).IsValid() {
		if u, ok := from.(*net.UDPAddr); ok && u.Port != 0 {
			return u
		}
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

func msgType(req *dhcpv4.DHCPv4) string {
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return "discover"
	case dhcpv4.MessageTypeRequest:
		return "request"
	case dhcpv4.MessageTypeRelease:
		return "release"
	case dhcpv4.MessageTypeDecline:
		return "decline"
	case dhcpv4.MessageTypeInform:
		return "inform"
	}
	return "other"
}

type metrics struct {
	packets   *prometheus.CounterVec
	decisions *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	duration  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_dhcp_packets_total",
			Help: "DHCP requests handled, by message type and outcome (offer, ack, nak, unknown, ignored, error, ...).",
		}, []string{"type", "outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_dhcp_decisions_total",
			Help: "Boot-file decisions in offers and acks, by kind (bios_pxe, uefi_pxe, arm64_pxe, http_boot, ipxe, none).",
		}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_dhcp_dropped_total",
			Help: "Packets dropped before or after handling, by reason (parse, overload, pending_acks, write, panic).",
		}, []string{"reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kiln_dhcp_handle_duration_seconds",
			Help:    "Time to parse, decide, persist and send one request.",
			Buckets: prometheus.ExponentialBuckets(0.00002, 4, 10),
		}),
	}
	if reg == nil {
		return m, nil
	}
	inUse := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kiln_dhcp_leases_in_use",
		Help: "Pool leases bound and not expired.",
	}, func() float64 {
		if s.pool == nil {
			return 0
		}
		return float64(s.pool.inUse(s.cfg.Now()))
	})
	for _, c := range []prometheus.Collector{m.packets, m.decisions, m.dropped, m.duration, inUse} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
