package bootagent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// ErrNoNIC is returned (wrapped, naming the MAC) when no interface with the
// boot NIC's MAC appears in time.
var ErrNoNIC = errors.New("boot NIC not found")

// ErrDHCP is returned (wrapped) when DHCP gives no usable lease.
var ErrDHCP = errors.New("dhcp failed")

// LinuxNetwork implements Network with DHCPv4 (nclient4) and rtnetlink. The
// zero value uses the documented defaults.
type LinuxNetwork struct {
	// WaitNIC is how long to wait for the NIC to appear; 0 means 30 s.
	WaitNIC time.Duration
	// DHCPTimeout bounds the whole DHCP exchange including retries; 0 means
	// 60 s.
	DHCPTimeout time.Duration
	// Logger gets details; nil discards.
	Logger *slog.Logger
}

func (n *LinuxNetwork) log() *slog.Logger {
	if n.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Logger
}

// Up waits for the NIC with this MAC, brings lo and the NIC up, gets a DHCP
// lease and configures its address and, when option 3 is present, the
// default route.
func (n *LinuxNetwork) Up(ctx context.Context, mac net.HardwareAddr) (Lease, error) {
	wait := n.WaitNIC
	if wait <= 0 {
		wait = 30 * time.Second
	}
	ifc, err := waitForNIC(ctx, mac, wait)
	if err != nil {
		return Lease{}, err
	}
	for _, name := range []string{"lo", ifc.Name} {
		if err := linkUp(name); err != nil {
			return Lease{}, err
		}
	}

	timeout := n.DHCPTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client, err := nclient4.New(ifc.Name, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return Lease{}, fmt.Errorf("%w: %s: %w", ErrDHCP, ifc.Name, err)
	}
	defer client.Close()
	var last error
	for attempt := 1; ; attempt++ {
		lease, err := client.Request(dctx)
		if err == nil {
			l, err := n.apply(ifc, lease.ACK.YourIPAddr, lease.ACK.SubnetMask(), lease.ACK.Router())
			if err != nil {
				return Lease{}, err
			}
			return l, nil
		}
		last = err
		n.log().Warn("dhcp attempt failed", "iface", ifc.Name, "attempt", attempt, "err", err)
		select {
		case <-dctx.Done():
			return Lease{}, fmt.Errorf("%w: %s: no lease after %d attempts: %w", ErrDHCP, ifc.Name, attempt, last)
		case <-time.After(time.Second):
		}
	}
}

func (n *LinuxNetwork) apply(ifc *net.Interface, yiaddr net.IP, mask net.IPMask, routers []net.IP) (Lease, error) {
	ip, ok := netip.AddrFromSlice(yiaddr.To4())
	if !ok || !ip.IsValid() || ip.IsUnspecified() {
		return Lease{}, fmt.Errorf("%w: offer has no address", ErrDHCP)
	}
	bits := 24
	if mask != nil {
		if ones, size := mask.Size(); size == 32 && ones > 0 {
			bits = ones
		}
	}
	l := Lease{Interface: ifc.Name, Addr: netip.PrefixFrom(ip, bits)}
	if err := addAddr(ifc.Index, l.Addr); err != nil {
		return Lease{}, fmt.Errorf("%s: add address %s: %w", ifc.Name, l.Addr, err)
	}
	if len(routers) > 0 {
		if gw, ok := netip.AddrFromSlice(routers[0].To4()); ok && gw.IsValid() && !gw.IsUnspecified() {
			if err := addDefaultRoute(ifc.Index, gw); err != nil {
				return Lease{}, fmt.Errorf("%s: default route via %s: %w", ifc.Name, gw, err)
			}
			l.Gateway = gw
		}
	}
	return l, nil
}

// waitForNIC polls the interface list until one has this MAC.
func waitForNIC(ctx context.Context, mac net.HardwareAddr, wait time.Duration) (*net.Interface, error) {
	deadline := time.Now().Add(wait)
	for {
		ifs, err := net.Interfaces()
		if err == nil {
			for i := range ifs {
				if bytes.Equal(ifs[i].HardwareAddr, mac) {
					return &ifs[i], nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: no interface with MAC %s after %s", ErrNoNIC, mac, wait)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s: %w", ErrNoNIC, mac, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// linkUp sets IFF_UP on the named interface.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("link %s up: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("link %s up: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link %s up: SIOCGIFFLAGS: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link %s up: SIOCSIFFLAGS: %w", name, err)
	}
	return nil
}

// netlink message building (rtnetlink, native endian).

func nlAttr(typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b := make([]byte, (l+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(l))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

// addAddr adds addr to the interface (RTM_NEWADDR, replacing an equal one).
func addAddr(index int, addr netip.Prefix) error {
	ip := addr.Addr().As4()
	msg := []byte{unix.AF_INET, byte(addr.Bits()), 0, unix.RT_SCOPE_UNIVERSE}
	msg = append(msg, u32(uint32(index))...)
	msg = append(msg, nlAttr(unix.IFA_LOCAL, ip[:])...)
	msg = append(msg, nlAttr(unix.IFA_ADDRESS, ip[:])...)
	if addr.Bits() < 31 {
		bc := ip
		hostBits := 32 - addr.Bits()
		v := binary.BigEndian.Uint32(bc[:]) | (1<<hostBits - 1)
		binary.BigEndian.PutUint32(bc[:], v)
		msg = append(msg, nlAttr(unix.IFA_BROADCAST, bc[:])...)
	}
	return nlRequest(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

// addDefaultRoute adds 0.0.0.0/0 via gw on the interface (RTM_NEWROUTE).
func addDefaultRoute(index int, gw netip.Addr) error {
	g := gw.As4()
	msg := []byte{unix.AF_INET, 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_DHCP, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST}
	msg = append(msg, u32(0)...) // rtm_flags
	msg = append(msg, nlAttr(unix.RTA_GATEWAY, g[:])...)
	msg = append(msg, nlAttr(unix.RTA_OIF, u32(uint32(index)))...)
	return nlRequest(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, msg)
}

// nlRequest sends one rtnetlink request and waits for its acknowledgement.
func nlRequest(typ uint16, flags uint16, payload []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	const seq = 1
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(payload))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(payload)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	msg = append(msg, payload...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return errors.New("netlink: truncated message")
			}
			mtype := binary.NativeEndian.Uint16(b[4:])
			mseq := binary.NativeEndian.Uint32(b[8:])
			if mtype == unix.NLMSG_ERROR && mseq == seq && l >= unix.NLMSG_HDRLEN+4 {
				if code := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); code != 0 {
					return unix.Errno(-code)
				}
				return nil
			}
			next := (l + 3) &^ 3
			if next > len(b) {
				break
			}
			b = b[next:]
		}
	}
}
