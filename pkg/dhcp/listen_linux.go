package dhcp

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenInterface opens a UDP socket on 0.0.0.0:port bound to the network
// interface ifname (SO_BINDTODEVICE), with SO_BROADCAST so that replies to
// 255.255.255.255 leave through that interface, and SO_REUSEADDR. It needs
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
