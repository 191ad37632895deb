package dhcp

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// rcvBuf is the socket receive buffer ListenInterface asks for.
const rcvBuf = 4 << 20

// ListenInterface opens a UDP socket on 0.0.0.0:port bound to the network
// interface ifname (SO_BINDTODEVICE), with SO_BROADCAST so that replies to
// 255.255.255.255 leave through that interface, SO_REUSEADDR, and a 4 MiB
// receive buffer (SO_RCVBUFFORCE when permitted, else SO_RCVBUF up to the
// system's rmem_max). It needs
// CAP_NET_RAW (for the device binding) and, for port 67, CAP_NET_BIND_SERVICE.
func ListenInterface(ifname string, port int) (net.PacketConn, error) {
	if ifname == "" {
		return nil, fmt.Errorf("dhcp: listen: interface name is empty")
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			// A deep receive buffer absorbs bursts (a rack powering on)
			// while handlers catch up; FORCE needs CAP_NET_ADMIN.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
			}
			serr = unix.BindToDevice(int(fd), ifname)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s port %d: %w", ifname, port, err)
	}
	return conn, nil
}
