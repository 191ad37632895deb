package dhcp

import (
	"fmt"
	"net"
	"net/netip"
)

// FirstIPv4 returns the first IPv4 address of the named interface, the
// default for Config.ServerIP (kilnd's --advertise-ip). The error names the
// interface when it does not exist or has no IPv4 address.
func FirstIPv4(ifname string) (netip.Addr, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dhcp: interface %s: %w", ifname, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dhcp: interface %s: %w", ifname, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if v4 := n.IP.To4(); v4 != nil {
				return netip.AddrFrom4([4]byte(v4)), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("dhcp: interface %s has no IPv4 address", ifname)
}
