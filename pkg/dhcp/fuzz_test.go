package dhcp

import (
	"context"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandle feeds arbitrary datagrams through the parser and the handler
// of a reservation server (pool + discovery) and a proxyDHCP server. Run:
// go test -run x -fuzz FuzzHandle -fuzztime 60s ./pkg/dhcp
func FuzzHandle(f *testing.F) {
	seeds := []*dhcpv4.DHCPv4{
		msg(dhcpv4.MessageTypeDiscover, macBIOS, vendor(vendorBIOS), arch(0)),
		msg(dhcpv4.MessageTypeDiscover, macHTTP, vendor(vendorHTTPc), arch(16)),
		msg(dhcpv4.MessageTypeDiscover, macUnknown, vendor(vendorARM), arch(11), ipxeOpts()),
		msg(dhcpv4.MessageTypeRequest, macUEFI, requested("198.18.1.10"), sid("198.18.0.1"), relay("198.18.0.254")),
		msg(dhcpv4.MessageTypeRequest, macIPXE, ciaddr("198.18.0.50")),
		msg(dhcpv4.MessageTypeRelease, macUEFI, ciaddr("198.18.1.10")),
		msg(dhcpv4.MessageTypeDecline, macUEFI, requested("198.18.1.10")),
		msg(dhcpv4.MessageTypeInform, macRelay, ciaddr("10.20.0.5")),
	}
	for _, s := range seeds {
		f.Add(s.ToBytes())
	}
	f.Add([]byte{})
	f.Add(make([]byte, 240))
	clk := &clock{t: t0}
	cfg := testConfig(clk)
	cfg.Discovery = true
	cfg.Pool.End = cfg.Pool.Start.Next().Next() // tiny pool: exhaustion paths too
	res, err := New(cfg, testHosts(), newMemLeases(), nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	pcfg := testConfig(clk)
	pcfg.Mode = ModeProxy
	proxy, err := New(pcfg, testHosts(), nil, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			return
		}
		for _, s := range []*Server{res, proxy} {
			resp, err := s.Handle(context.Background(), req)
			if err != nil {
				t.Fatalf("Handle: %v", err)
			}
			if resp == nil {
				continue
			}
			if resp.OpCode != dhcpv4.OpcodeBootReply || resp.TransactionID != req.TransactionID {
				t.Fatalf("reply op %v xid %v for xid %v", resp.OpCode, resp.TransactionID, req.TransactionID)
			}
			if _, err := dhcpv4.FromBytes(resp.ToBytes()); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			_ = destination(req, resp, nil)
		}
		clk.Add(7e9)
	})
}
