// Package dhcp is kilnd's DHCPv4 server: fixed-address reservations, an
// optional persisted pool, proxyDHCP, and the boot-file decision for PXE,
// UEFI HTTP boot and iPXE clients.
//
// The pure decision is Server.Handle (request in, reply out, no sockets);
// Server.Serve runs it over an injected UDP conn with a bounded worker pool.
// Leases live in an in-memory index loaded from a LeaseStore at start; an
// ACK is sent only after its lease is durable.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Sentinel errors.
var (
	// ErrHostLookup wraps a Hosts failure other than an unknown MAC.
	ErrHostLookup = errors.New("host lookup failed")
	// ErrLeaseStore wraps a LeaseStore failure; the request is not answered.
	ErrLeaseStore = errors.New("lease store failed")
)

// Hosts is what the server needs to know about the fleet.
type Hosts interface {
	// HostByMAC returns the host owning mac (lowercase, colon separated).
	// The error wraps fleet.ErrNotFound for an unknown MAC. Called once per
	// packet; it must be safe for concurrent use.
	HostByMAC(ctx context.Context, mac string) (fleet.Host, error)
	// HostByIP returns the host whose fixed address is ip; the error wraps
	// fleet.ErrNotFound when no host has it. The pool never hands out such
	// an address. Called once per pool DISCOVER and REQUEST.
	HostByIP(ctx context.Context, ip netip.Addr) (fleet.Host, error)
	// RecordBootMode stores the host's firmware family ("bios" or "uefi").
	// Called only when it differs from Host.BootMode; may be asynchronous.
	RecordBootMode(ctx context.Context, host, mode string) error
}

// LeaseStore persists pool leases.
type LeaseStore interface {
	// Leases returns every stored lease; called once by New.
	Leases(ctx context.Context) ([]fleet.Lease, error)
	// PutLease stores a lease by its IP, replacing the address's previous
	// lease and the MAC's lease at another address; durable when it returns
	// nil. Called concurrently by up to Config.Workers handlers.
	PutLease(ctx context.Context, l fleet.Lease) error
	// DeleteLease removes the lease of ip; a missing lease is not an error.
	DeleteLease(ctx context.Context, ip netip.Addr) error
}

// Server answers DHCPv4 requests. Create it with New.
type Server struct {
	cfg      Config
	hosts    Hosts
	store    LeaseStore
	log      *slog.Logger
	debug    bool
	pool     *pool
	m        *metrics
	serverIP net.IP
	httpBase string
	mask     net.IPMask // pool subnet mask
}

// New validates cfg and builds a server. leases may be nil when cfg.Pool is
// nil or Mode is not reservation; otherwise its leases are loaded now. log nil discards; reg nil
// registers no metrics.
func New(cfg Config, hosts Hosts, leases LeaseStore, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if hosts == nil {
		return nil, fmt.Errorf("%w: Hosts is nil", ErrConfig)
	}
	if cfg.Pool != nil && leases == nil && (cfg.Mode == "" || cfg.Mode == ModeReservation) {
		return nil, fmt.Errorf("%w: a Pool needs a LeaseStore", ErrConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := cfg.withDefaults()
	s := &Server{
		cfg:      c,
		hosts:    hosts,
		store:    leases,
		log:      log,
		debug:    log.Enabled(context.Background(), slog.LevelDebug),
		httpBase: strings.TrimSuffix(c.HTTPBase.String(), "/"),
	}
	if c.ServerIP.IsValid() {
		s.serverIP = net.IP(c.ServerIP.AsSlice())
	}
	if c.Pool != nil && c.Mode == ModeReservation {
		s.pool = newPool(c.Pool, c.ServerIP)
		s.mask = net.CIDRMask(c.Pool.Subnet.Bits(), 32)
		ls, err := leases.Leases(context.Background())
		if err != nil {
			return nil, fmt.Errorf("dhcp: load leases: %w: %w", ErrLeaseStore, err)
		}
		s.pool.load(ls)
	}
	m, err := newMetrics(reg, s)
	if err != nil {
		return nil, fmt.Errorf("dhcp: metrics: %w", err)
	}
	s.m = m
	return s, nil
}

// Handle decides the reply to one request: nil (and a nil error) means no
// reply. It persists pool leases before returning an ACK and records boot
// modes through Hosts. It never panics on any parsed packet and is safe for
// concurrent use. The returned error (store or host lookup failure) means
// the request was not answered.
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	resp, _, err := s.handle(ctx, req, nil)
	return resp, err
}

// pending is an ACK whose lease is not yet durable.
type pending struct {
	off   uint32
	lease fleet.Lease
}

// persist makes a pending lease durable and binds it, or frees the address.
func (s *Server) persist(ctx context.Context, p *pending) error {
	if err := s.store.PutLease(ctx, p.lease); err != nil {
		s.pool.commit(p.off, p.lease.MAC, "", "", false)
		return fmt.Errorf("dhcp: lease %s for %s: %w: %w", p.lease.IP, p.lease.MAC, ErrLeaseStore, err)
	}
	s.pool.commit(p.off, p.lease.MAC, p.lease.Host, p.lease.Hostname, true)
	return nil
}

// handle also returns the outcome label. With pend nil an ACK's lease is
// persisted before handle returns; otherwise it is left in *pend (pend.lease
// valid) for the caller to persist before sending the reply.
func (s *Server) handle(ctx context.Context, req *dhcpv4.DHCPv4, pend *pending) (*dhcpv4.DHCPv4, string, error) {
	if req == nil || req.OpCode != dhcpv4.OpcodeBootRequest || req.HWType != 1 || len(req.ClientHWAddr) != 6 {
		return nil, "ignored", nil
	}
	if s.cfg.Mode == ModeOff {
		return nil, "ignored", nil
	}
	mt := req.MessageType()
	switch mt {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeInform:
	default:
		return nil, "ignored", nil
	}
	mac := req.ClientHWAddr.String()
	host, err := s.hosts.HostByMAC(ctx, mac)
	known := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return nil, "error", fmt.Errorf("dhcp: %s: %w: %w", mac, ErrHostLookup, err)
	}
	if !known && !s.cfg.Discovery {
		return nil, "unknown", nil
	}
	c := classify(req)
	if known {
		if mode := c.bootMode(); mode != "" && mode != host.BootMode {
			if err := s.hosts.RecordBootMode(ctx, host.Name, mode); err != nil {
				s.log.Warn("dhcp: record boot mode", "host", host.Name, "mode", mode, "err", err)
			}
		}
	}
	boot := bootFile{kind: DecisionNone}
	if !known || !host.NetbootDisabled {
		boot = s.decide(c, mac)
	}
	if s.cfg.Mode == ModeProxy {
		return s.proxy(req, mt, c, boot)
	}
	var resp *dhcpv4.DHCPv4
	var outcome string
	if known && host.IP.IsValid() {
		resp, outcome = s.fixed(req, mt, host)
	} else {
		resp, outcome, err = s.fromPool(ctx, req, mt, mac, host, pend)
		if err != nil {
			return nil, outcome, err
		}
	}
	if resp != nil && (outcome == "offer" || outcome == "ack") {
		s.applyBoot(resp, boot)
		s.m.decisions.WithLabelValues(boot.kind).Inc()
		if s.debug {
			s.log.Debug("dhcp: reply", "mac", mac, "xid", req.TransactionID.String(), "host", host.Name,
				"type", outcome, "ip", resp.YourIPAddr.String(), "boot", boot.kind, "file", boot.file)
		}
	}
	return resp, outcome, nil
}

// fixed answers a host with a configured address; the pool is not touched.
func (s *Server) fixed(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, host fleet.Host) (*dhcpv4.DHCPv4, string) {
	ip := host.IP.Addr()
	if gi := giaddr(req); gi.IsValid() && !host.IP.Masked().Contains(gi) {
		return nil, "wrong_relay"
	}
	lease := time.Hour
	if s.cfg.Pool != nil {
		lease = s.cfg.Pool.LeaseTime
	}
	addrOpts := func(resp *dhcpv4.DHCPv4) {
		resp.YourIPAddr = net.IP(ip.AsSlice())
		resp.Options.Update(dhcpv4.OptSubnetMask(net.CIDRMask(host.IP.Bits(), 32)))
		if host.Gateway.IsValid() {
			resp.Options.Update(dhcpv4.OptRouter(net.IP(host.Gateway.AsSlice())))
		}
		s.leaseOpts(resp, lease, s.cfg.Pool != nil && s.cfg.Pool.Subnet.Contains(ip))
	}
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		resp := s.reply(req, dhcpv4.MessageTypeOffer)
		addrOpts(resp)
		return resp, "offer"
	case dhcpv4.MessageTypeRequest:
		if sid := serverID(req); sid.IsValid() && sid != s.cfg.ServerIP {
			return nil, "other_server"
		}
		if requestedIP(req) != ip {
			return s.nak(req), "nak"
		}
		resp := s.reply(req, dhcpv4.MessageTypeAck)
		addrOpts(resp)
		return resp, "ack"
	case dhcpv4.MessageTypeInform:
		return s.inform(req), "ack"
	}
	return nil, "ignored"
}

// fromPool answers from the pool.
func (s *Server) fromPool(ctx context.Context, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, mac string, host fleet.Host, pend *pending) (*dhcpv4.DHCPv4, string, error) {
	if s.pool == nil {
		return nil, "no_pool", nil
	}
	if gi := giaddr(req); gi.IsValid() && !s.cfg.Pool.Subnet.Contains(gi) {
		return nil, "wrong_relay", nil
	}
	now := s.cfg.Now()
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		var ip netip.Addr
		for try := 0; ; try++ {
			var ok bool
			ip, ok = s.pool.offer(mac, reqOpt(req), now, s.cfg.OfferHold)
			if !ok {
				s.log.Warn("dhcp: pool exhausted", "mac", mac)
				return nil, "exhausted", nil
			}
			owner, err := s.fixedOwner(ctx, ip)
			if err != nil {
				s.pool.cancel(mac)
				return nil, "error", err
			}
			if owner == "" {
				break
			}
			s.log.Warn("dhcp: pool address is a host's fixed IP; not handed out", "ip", ip.String(), "host", owner, "hold", s.cfg.DeclineHold)
			s.pool.holdFixed(mac, ip, now.Add(s.cfg.DeclineHold))
			if try == maxFixedSkips {
				// Bounded work per packet; the next DISCOVER goes on.
				return nil, "exhausted", nil
			}
		}
		resp := s.reply(req, dhcpv4.MessageTypeOffer)
		resp.YourIPAddr = net.IP(ip.AsSlice())
		s.poolOpts(resp)
		return resp, "offer", nil
	case dhcpv4.MessageTypeRequest:
		if sid := serverID(req); sid.IsValid() && sid != s.cfg.ServerIP {
			s.pool.cancel(mac)
			return nil, "other_server", nil
		}
		ip := requestedIP(req)
		if !ip.IsValid() {
			return nil, "ignored", nil
		}
		if owner, err := s.fixedOwner(ctx, ip); err != nil {
			return nil, "error", err
		} else if owner != "" {
			s.log.Warn("dhcp: client requested a host's fixed IP", "mac", mac, "ip", ip.String(), "host", owner)
			return s.nak(req), "nak", nil
		}
		off, ok := s.pool.request(mac, ip, now, s.cfg.Pool.LeaseTime)
		if !ok {
			return s.nak(req), "nak", nil
		}
		l := s.pool.lease(off)
		l.Host, l.Hostname = host.Name, req.HostName()
		if pend != nil {
			*pend = pending{off: off, lease: l}
		} else if err := s.persist(ctx, &pending{off: off, lease: l}); err != nil {
			return nil, "error", err
		}
		resp := s.reply(req, dhcpv4.MessageTypeAck)
		resp.YourIPAddr = net.IP(ip.AsSlice())
		s.poolOpts(resp)
		return resp, "ack", nil
	case dhcpv4.MessageTypeRelease:
		ip := toAddr(req.ClientIPAddr)
		off, ok := s.pool.startRelease(mac, ip)
		if !ok {
			return nil, "ignored", nil
		}
		err := s.store.DeleteLease(ctx, ip)
		s.pool.finishRelease(off, mac)
		if err != nil {
			return nil, "error", fmt.Errorf("dhcp: release %s by %s: %w: %w", ip, mac, ErrLeaseStore, err)
		}
		return nil, "released", nil
	case dhcpv4.MessageTypeDecline:
		ip := reqOpt(req)
		l, ok := s.pool.decline(mac, ip, now, s.cfg.DeclineHold)
		if !ok {
			return nil, "ignored", nil
		}
		s.log.Warn("dhcp: address declined", "mac", mac, "ip", ip.String())
		if err := s.store.PutLease(ctx, l); err != nil {
			return nil, "error", fmt.Errorf("dhcp: decline %s by %s: %w: %w", ip, mac, ErrLeaseStore, err)
		}
		return nil, "declined", nil
	case dhcpv4.MessageTypeInform:
		return s.inform(req), "ack", nil
	}
	return nil, "ignored", nil
}

// maxFixedSkips bounds the pool addresses one DISCOVER passes over because
// they are hosts' fixed IPs.
const maxFixedSkips = 16

// fixedOwner returns the name of the host whose fixed IP ip is, or "".
func (s *Server) fixedOwner(ctx context.Context, ip netip.Addr) (string, error) {
	h, err := s.hosts.HostByIP(ctx, ip)
	switch {
	case err == nil:
		return h.Name, nil
	case errors.Is(err, fleet.ErrNotFound):
		return "", nil
	default:
		return "", fmt.Errorf("dhcp: %s: %w: %w", ip, ErrHostLookup, err)
	}
}

// proxy answers PXE clients (option 60 PXEClient, iPXE included) with boot
// options only (proxyDHCP): no yiaddr, siaddr and file set, option 60
// PXEClient and option 43 PXE_DISCOVERY_CONTROL=8. DISCOVERs get an OFFER;
// REQUESTs addressed to this server (option 54 = ServerIP, or a client with
// ciaddr and no option 54, as on port 4011) get an ACK. UEFI HTTP boot
// clients and plain DHCP clients get nothing.
func (s *Server) proxy(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, c client, boot bootFile) (*dhcpv4.DHCPv4, string, error) {
	if c.kind != kindPXE && !(c.kind == kindIPXE && strings.HasPrefix(string(req.Options.Get(dhcpv4.OptionClassIdentifier)), vendorPXE)) {
		return nil, "not_pxe", nil
	}
	if boot.file == "" {
		s.m.decisions.WithLabelValues(DecisionNone).Inc()
		return nil, "no_boot", nil
	}
	var resp *dhcpv4.DHCPv4
	var outcome string
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		resp, outcome = s.reply(req, dhcpv4.MessageTypeOffer), "offer"
	case dhcpv4.MessageTypeRequest:
		sid := serverID(req)
		if sid != s.cfg.ServerIP && !(sid == netip.Addr{} && !req.ClientIPAddr.IsUnspecified() && len(req.ClientIPAddr) > 0) {
			return nil, "other_server", nil
		}
		resp, outcome = s.reply(req, dhcpv4.MessageTypeAck), "ack"
	default:
		return nil, "ignored", nil
	}
	boot.vendor = vendorPXE // proxyDHCP replies always carry option 60 PXEClient
	s.applyBoot(resp, boot)
	s.m.decisions.WithLabelValues(boot.kind).Inc()
	return resp, outcome, nil
}

// reply starts a reply to req: BOOTREPLY with xid, flags, chaddr, giaddr,
// options 82 and 61 copied, message type and server identifier.
func (s *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	resp := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       make(dhcpv4.Options, 12),
	}
	if resp.GatewayIPAddr == nil {
		resp.GatewayIPAddr = net.IPv4zero
	}
	if mt == dhcpv4.MessageTypeAck && req.MessageType() == dhcpv4.MessageTypeInform {
		resp.ClientIPAddr = req.ClientIPAddr
	}
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.Options.Get(code); v != nil {
			resp.Options.Update(dhcpv4.OptGeneric(code, v))
		}
	}
	resp.Options.Update(dhcpv4.OptMessageType(mt))
	resp.Options.Update(dhcpv4.OptServerIdentifier(s.serverIP))
	return resp
}

func (s *Server) nak(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	resp := s.reply(req, dhcpv4.MessageTypeNak)
	if resp.GatewayIPAddr != nil && !resp.GatewayIPAddr.IsUnspecified() {
		resp.SetBroadcast() // RFC 2131 4.3.2: the relay broadcasts NAKs
	}
	return resp
}

// inform answers DHCPINFORM: configuration only, no address.
func (s *Server) inform(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	resp := s.reply(req, dhcpv4.MessageTypeAck)
	if p := s.cfg.Pool; p != nil {
		if p.Router.IsValid() {
			resp.Options.Update(dhcpv4.OptRouter(net.IP(p.Router.AsSlice())))
		}
		s.dnsOpts(resp)
	}
	return resp
}

func (s *Server) poolOpts(resp *dhcpv4.DHCPv4) {
	p := s.cfg.Pool
	resp.Options.Update(dhcpv4.OptSubnetMask(s.mask))
	if p.Router.IsValid() {
		resp.Options.Update(dhcpv4.OptRouter(net.IP(p.Router.AsSlice())))
	}
	s.leaseOpts(resp, p.LeaseTime, true)
}

func (s *Server) leaseOpts(resp *dhcpv4.DHCPv4, lease time.Duration, dns bool) {
	resp.Options.Update(dhcpv4.OptIPAddressLeaseTime(lease))
	resp.Options.Update(dhcpv4.OptRenewTimeValue(lease / 2))
	resp.Options.Update(dhcpv4.OptRebindingTimeValue(lease * 7 / 8))
	if dns {
		s.dnsOpts(resp)
	}
}

func (s *Server) dnsOpts(resp *dhcpv4.DHCPv4) {
	p := s.cfg.Pool
	if len(p.DNS) > 0 {
		ips := make([]net.IP, len(p.DNS))
		for i, d := range p.DNS {
			ips[i] = net.IP(d.AsSlice())
		}
		resp.Options.Update(dhcpv4.OptDNS(ips...))
	}
	if p.Domain != "" {
		resp.Options.Update(dhcpv4.OptDomainName(p.Domain))
	}
}

func toAddr(ip net.IP) netip.Addr {
	if v4 := ip.To4(); v4 != nil {
		a := netip.AddrFrom4([4]byte(v4))
		if !a.IsUnspecified() {
			return a
		}
	}
	return netip.Addr{}
}

func giaddr(req *dhcpv4.DHCPv4) netip.Addr { return toAddr(req.GatewayIPAddr) }

func serverID(req *dhcpv4.DHCPv4) netip.Addr {
	return toAddr(net.IP(req.Options.Get(dhcpv4.OptionServerIdentifier)))
}

func reqOpt(req *dhcpv4.DHCPv4) netip.Addr {
	return toAddr(net.IP(req.Options.Get(dhcpv4.OptionRequestedIPAddress)))
}

// requestedIP is option 50 (SELECTING, INIT-REBOOT) or ciaddr (RENEWING,
// REBINDING).
func requestedIP(req *dhcpv4.DHCPv4) netip.Addr {
	if a := reqOpt(req); a.IsValid() {
		return a
	}
	return toAddr(req.ClientIPAddr)
}
