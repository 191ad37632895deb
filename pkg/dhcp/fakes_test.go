package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// fakeHosts implements Hosts over a map.
type fakeHosts struct {
	mu     sync.Mutex
	hosts  map[string]fleet.Host // by mac
	modes  map[string]string     // RecordBootMode calls: host -> mode
	failOn string                // mac whose lookup fails with a non-NotFound error
	failIP bool                  // every HostByIP fails with a non-NotFound error
}

func newFakeHosts(hs ...fleet.Host) *fakeHosts {
	f := &fakeHosts{hosts: map[string]fleet.Host{}, modes: map[string]string{}}
	for _, h := range hs {
		for _, m := range h.MACs {
			f.hosts[m] = h
		}
	}
	return f
}

func (f *fakeHosts) HostByMAC(_ context.Context, mac string) (fleet.Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if mac == f.failOn {
		return fleet.Host{}, errors.New("disk on fire")
	}
	h, ok := f.hosts[mac]
	if !ok {
		return fleet.Host{}, fmt.Errorf("host with mac %s: %w", mac, fleet.ErrNotFound)
	}
	return h, nil
}

func (f *fakeHosts) HostByIP(_ context.Context, ip netip.Addr) (fleet.Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failIP {
		return fleet.Host{}, errors.New("disk on fire")
	}
	for _, h := range f.hosts {
		if h.IP.IsValid() && h.IP.Addr() == ip {
			return h, nil
		}
	}
	return fleet.Host{}, fmt.Errorf("host with ip %s: %w", ip, fleet.ErrNotFound)
}

// add adds or replaces a host.
func (f *fakeHosts) add(h fleet.Host) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range h.MACs {
		f.hosts[m] = h
	}
}

func (f *fakeHosts) RecordBootMode(_ context.Context, host, mode string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.modes[host] = mode
	for m, h := range f.hosts {
		if h.Name == host {
			h.BootMode = mode
			f.hosts[m] = h
		}
	}
	return nil
}

// memLeases implements LeaseStore in memory with the store's invariants
// (one lease per address, one address per MAC).
type memLeases struct {
	mu     sync.Mutex
	leases map[netip.Addr]fleet.Lease
	byMAC  map[string]netip.Addr
	fail   bool
	puts   int
}

func newMemLeases() *memLeases {
	return &memLeases{leases: map[netip.Addr]fleet.Lease{}, byMAC: map[string]netip.Addr{}}
}

func (m *memLeases) Leases(context.Context) ([]fleet.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []fleet.Lease
	for _, l := range m.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out, nil
}

func (m *memLeases) PutLease(_ context.Context, l fleet.Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("fsync failed")
	}
	m.puts++
	if old, ok := m.leases[l.IP]; ok && old.MAC != "" && m.byMAC[old.MAC] == l.IP {
		delete(m.byMAC, old.MAC)
	}
	if l.MAC != "" {
		if ip, ok := m.byMAC[l.MAC]; ok && ip != l.IP {
			delete(m.leases, ip)
		}
		m.byMAC[l.MAC] = l.IP
	}
	m.leases[l.IP] = l
	return nil
}

func (m *memLeases) DeleteLease(_ context.Context, ip netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("fsync failed")
	}
	if old, ok := m.leases[ip]; ok && m.byMAC[old.MAC] == ip {
		delete(m.byMAC, old.MAC)
	}
	delete(m.leases, ip)
	return nil
}

// clock is a settable fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Client request builders. The xid is fixed so golden files are stable.

type clientOpt func(*dhcpv4.DHCPv4)

func vendor(s string) clientOpt {
	return func(d *dhcpv4.DHCPv4) { d.UpdateOption(dhcpv4.OptClassIdentifier(s)) }
}

func arch(a uint16) clientOpt {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{byte(a >> 8), byte(a)}))
	}
}

func ipxeOpts() clientOpt {
	return func(d *dhcpv4.DHCPv4) {
		d.UpdateOption(dhcpv4.OptUserClass("iPXE"))
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), []byte{0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0x13, 0x01, 0x01}))
	}
}

func relay(gi string) clientOpt {
	return func(d *dhcpv4.DHCPv4) {
		d.GatewayIPAddr = net.ParseIP(gi).To4()
		d.HopCount = 1
		d.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 4, 'p', 'o', 'r', 't'}))
	}
}

func requested(ip string) clientOpt {
	return func(d *dhcpv4.DHCPv4) { d.UpdateOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip).To4())) }
}

func sid(ip string) clientOpt {
	return func(d *dhcpv4.DHCPv4) { d.UpdateOption(dhcpv4.OptServerIdentifier(net.ParseIP(ip).To4())) }
}

func ciaddr(ip string) clientOpt {
	return func(d *dhcpv4.DHCPv4) { d.ClientIPAddr = net.ParseIP(ip).To4() }
}

func msg(mt dhcpv4.MessageType, mac string, opts ...clientOpt) *dhcpv4.DHCPv4 {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	d := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        1,
		TransactionID: dhcpv4.TransactionID{0x4b, 0x49, 0x4c, 0x4e},
		Flags:         0x8000,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  hw,
		Options:       dhcpv4.Options{},
	}
	d.UpdateOption(dhcpv4.OptMessageType(mt))
	for _, o := range opts {
		o(d)
	}
	// Round-trip through the wire format, as Serve does.
	p, err := dhcpv4.FromBytes(d.ToBytes())
	if err != nil {
		panic(err)
	}
	return p
}
