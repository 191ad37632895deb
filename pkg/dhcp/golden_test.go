package dhcp

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current replies")

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

const (
	macBIOS    = "52:54:00:00:00:01"
	macUEFI    = "52:54:00:00:00:02"
	macHTTP    = "52:54:00:00:00:03"
	macARM     = "52:54:00:00:00:04"
	macIPXE    = "52:54:00:00:00:05"
	macOff     = "52:54:00:00:00:06"
	macRelay   = "52:54:00:00:00:07"
	macUnknown = "52:54:00:00:00:99"

	vendorBIOS  = "PXEClient:Arch:00000:UNDI:002001"
	vendorEFI7  = "PXEClient:Arch:00007:UNDI:003016"
	vendorEFI9  = "PXEClient:Arch:00009:UNDI:003016"
	vendorARM   = "PXEClient:Arch:00011:UNDI:003000"
	vendorHTTPc = "HTTPClient:Arch:00016:UNDI:003001"
)

func testHosts() *fakeHosts {
	return newFakeHosts(
		fleet.Host{Name: "n-bios", MACs: []string{macBIOS}},
		fleet.Host{Name: "n-uefi", MACs: []string{macUEFI}},
		fleet.Host{Name: "n-http", MACs: []string{macHTTP}},
		fleet.Host{Name: "n-arm", MACs: []string{macARM}},
		fleet.Host{Name: "n-ipxe", MACs: []string{macIPXE}, IP: netip.MustParsePrefix("198.18.0.50/15"), Gateway: netip.MustParseAddr("198.18.0.1"), BootMode: "bios"},
		fleet.Host{Name: "n-off", MACs: []string{macOff}, NetbootDisabled: true},
		fleet.Host{Name: "n-relay", MACs: []string{macRelay}, IP: netip.MustParsePrefix("10.20.0.5/24"), Gateway: netip.MustParseAddr("10.20.0.1")},
	)
}

func testConfig(clk *clock) Config {
	return Config{
		Mode:     ModeReservation,
		ServerIP: netip.MustParseAddr("198.18.0.1"),
		HTTPBase: url.URL{Scheme: "http", Host: "198.18.0.1:8080"},
		Pool: &Pool{
			Subnet:    netip.MustParsePrefix("198.18.0.0/15"),
			Start:     netip.MustParseAddr("198.18.1.10"),
			End:       netip.MustParseAddr("198.18.1.200"),
			Router:    netip.MustParseAddr("198.18.0.1"),
			DNS:       []netip.Addr{netip.MustParseAddr("198.18.0.1")},
			Domain:    "rack.test",
			LeaseTime: time.Hour,
		},
		Now: clk.Now,
	}
}

// step builds a request, possibly from the previous reply (nil at first).
type step func(prev *dhcpv4.DHCPv4) *dhcpv4.DHCPv4

func send(r *dhcpv4.DHCPv4) step { return func(*dhcpv4.DHCPv4) *dhcpv4.DHCPv4 { return r } }

// requestOffer is the SELECTING request for the previous offer.
func requestOffer(mac string, opts ...clientOpt) step {
	return func(prev *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		o := append([]clientOpt{requested(prev.YourIPAddr.String()), sid(prev.ServerIdentifier().String())}, opts...)
		return msg(dhcpv4.MessageTypeRequest, mac, o...)
	}
}

func TestGolden(t *testing.T) {
	allFirmware := func(string) bool { return true }
	tests := []struct {
		name  string
		cfg   func(*Config)
		steps []step
	}{
		{name: "bios_pxe", steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macBIOS, vendor(vendorBIOS), arch(0)))}},
		{name: "uefi_pxe_arch7", steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macUEFI, vendor(vendorEFI7), arch(7)))}},
		{name: "uefi_pxe_arch9", steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macUEFI, vendor(vendorEFI9), arch(9)))}},
		{name: "uefi_http_boot", steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macHTTP, vendor(vendorHTTPc), arch(16)))}},
		{
			name:  "uefi_pxe_without_tftp",
			cfg:   func(c *Config) { c.NoTFTP = true },
			steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macUEFI, vendor(vendorEFI7), arch(7)))},
		},
		{
			name:  "uefi_http_boot_without_tftp",
			cfg:   func(c *Config) { c.NoTFTP = true },
			steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macHTTP, vendor(vendorHTTPc), arch(16)))},
		},
		{name: "arm64_pxe_without_binary", steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macARM, vendor(vendorARM), arch(11)))}},
		{
			name:  "arm64_pxe_with_binary",
			cfg:   func(c *Config) { c.Firmware = allFirmware },
			steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macARM, vendor(vendorARM), arch(11)))},
		},
		{
			name: "ipxe_pool_dora",
			steps: []step{
				send(msg(dhcpv4.MessageTypeDiscover, macBIOS, vendor(vendorBIOS), arch(0), ipxeOpts())),
				requestOffer(macBIOS, vendor(vendorBIOS), arch(0), ipxeOpts()),
			},
		},
		{
			name: "ipxe_fixed_ip",
			steps: []step{
				send(msg(dhcpv4.MessageTypeDiscover, macIPXE, vendor(vendorEFI7), arch(7), ipxeOpts())),
				requestOffer(macIPXE, vendor(vendorEFI7), arch(7), ipxeOpts()),
			},
		},
		{
			name: "plain_client_dora",
			steps: []step{
				send(msg(dhcpv4.MessageTypeDiscover, macUEFI)),
				requestOffer(macUEFI),
			},
		},
		{
			name: "proxy_mode",
			cfg:  func(c *Config) { c.Mode = ModeProxy },
			steps: []step{
				send(msg(dhcpv4.MessageTypeDiscover, macBIOS, vendor(vendorBIOS), arch(0))),
				send(msg(dhcpv4.MessageTypeDiscover, macUEFI, vendor(vendorEFI7), arch(7))),
				send(msg(dhcpv4.MessageTypeDiscover, macIPXE, vendor(vendorBIOS), arch(0), ipxeOpts())),
				// Not a PXE client: proxyDHCP stays silent.
				send(msg(dhcpv4.MessageTypeDiscover, macUEFI)),
				// The real server's REQUEST: not ours.
				send(msg(dhcpv4.MessageTypeRequest, macUEFI, vendor(vendorEFI7), arch(7), requested("198.18.1.77"), sid("198.18.0.9"))),
				// A boot-server request (port 4011) from a client with an address.
				send(msg(dhcpv4.MessageTypeRequest, macUEFI, vendor(vendorEFI7), arch(7), ciaddr("198.18.1.77"), sid("198.18.0.1"))),
			},
		},
		{
			name: "relay",
			steps: []step{
				send(msg(dhcpv4.MessageTypeDiscover, macUEFI, vendor(vendorEFI7), arch(7), relay("198.18.0.254"))),
				requestOffer(macUEFI, vendor(vendorEFI7), arch(7), relay("198.18.0.254")),
				send(msg(dhcpv4.MessageTypeDiscover, macRelay, vendor(vendorBIOS), arch(0), relay("10.20.0.1"))),
				// A relay from a segment kiln does not serve.
				send(msg(dhcpv4.MessageTypeDiscover, macBIOS, vendor(vendorBIOS), arch(0), relay("10.99.0.1"))),
			},
		},
		{
			name:  "unknown_mac_without_discovery",
			steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macUnknown, vendor(vendorBIOS), arch(0)))},
		},
		{
			name: "unknown_mac_with_discovery",
			cfg:  func(c *Config) { c.Discovery = true },
			steps: []step{
				send(msg(dhcpv4.MessageTypeDiscover, macUnknown, vendor(vendorBIOS), arch(0))),
				send(msg(dhcpv4.MessageTypeDiscover, macUnknown, vendor(vendorBIOS), arch(0), ipxeOpts())),
			},
		},
		{
			name:  "netboot_disabled",
			steps: []step{send(msg(dhcpv4.MessageTypeDiscover, macOff, vendor(vendorEFI7), arch(7)))},
		},
		{
			name: "nak_address_of_another_mac",
			steps: []step{
				send(msg(dhcpv4.MessageTypeDiscover, macUEFI)),
				requestOffer(macUEFI),
				func(prev *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
					return msg(dhcpv4.MessageTypeRequest, macBIOS, requested(prev.YourIPAddr.String()))
				},
				// A fixed-IP host asking for another address.
				send(msg(dhcpv4.MessageTypeRequest, macIPXE, requested("198.18.0.51"))),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: t0}
			cfg := testConfig(clk)
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			hosts := testHosts()
			s, err := New(cfg, hosts, newMemLeases(), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			var prev *dhcpv4.DHCPv4
			for _, st := range tc.steps {
				req := st(prev)
				fmt.Fprintf(&b, "> %s\n", describeRequest(req))
				resp, err := s.Handle(context.Background(), req)
				if err != nil {
					t.Fatalf("Handle: %v", err)
				}
				if resp == nil {
					b.WriteString("< no reply\n\n")
					continue
				}
				// The reply must survive the wire format.
				wire, err := dhcpv4.FromBytes(resp.ToBytes())
				if err != nil {
					t.Fatalf("reply does not parse: %v", err)
				}
				fmt.Fprintf(&b, "< %s to %s\n%s\n", wire.MessageType(), destination(req, wire, &net.UDPAddr{IP: req.ClientIPAddr, Port: 68}), dumpReply(wire))
				prev = wire
			}
			if len(hosts.modes) > 0 {
				var names []string
				for h := range hosts.modes {
					names = append(names, h)
				}
				sort.Strings(names)
				for _, h := range names {
					fmt.Fprintf(&b, "boot mode recorded: %s=%s\n", h, hosts.modes[h])
				}
			}
			compareGolden(t, filepath.Join("testdata", tc.name+".golden"), b.String())
		})
	}
}

func describeRequest(r *dhcpv4.DHCPv4) string {
	s := fmt.Sprintf("%s %s", r.MessageType(), r.ClientHWAddr)
	if v := r.ClassIdentifier(); v != "" {
		s += fmt.Sprintf(" vendor=%q", v)
	}
	if a := r.ClientArch(); len(a) > 0 {
		s += fmt.Sprintf(" arch=%d", a[0])
	}
	if isIPXE(r) {
		s += " ipxe"
	}
	for _, f := range []struct {
		n string
		a netip.Addr
	}{{"ciaddr", toAddr(r.ClientIPAddr)}, {"giaddr", giaddr(r)}, {"requested", reqOpt(r)}, {"server-id", serverID(r)}} {
		if f.a.IsValid() {
			s += fmt.Sprintf(" %s=%s", f.n, f.a)
		}
	}
	return s
}

// dumpReply renders every header field and option in a stable text form.
func dumpReply(d *dhcpv4.DHCPv4) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  op=%s htype=%d hops=%d xid=%s flags=%#04x\n", d.OpCode, d.HWType, d.HopCount, d.TransactionID, d.Flags)
	fmt.Fprintf(&b, "  ciaddr=%s yiaddr=%s siaddr=%s giaddr=%s chaddr=%s\n", d.ClientIPAddr, d.YourIPAddr, d.ServerIPAddr, d.GatewayIPAddr, d.ClientHWAddr)
	fmt.Fprintf(&b, "  sname=%q file=%q\n", d.ServerHostName, d.BootFileName)
	var codes []int
	for c := range d.Options {
		codes = append(codes, int(c))
	}
	sort.Ints(codes)
	for _, c := range codes {
		v := d.Options[uint8(c)]
		name := dhcpv4.GenericOptionCode(c).String()
		if o, ok := optionNames()[c]; ok {
			name = o.String()
		}
		fmt.Fprintf(&b, "  opt %3d %-30s %s\n", c, name, renderValue(v))
	}
	return b.String()
}

func optionNames() map[int]dhcpv4.OptionCode {
	m := map[int]dhcpv4.OptionCode{}
	for _, o := range []dhcpv4.OptionCode{
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer, dhcpv4.OptionDomainName,
		dhcpv4.OptionVendorSpecificInformation, dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionDHCPMessageType,
		dhcpv4.OptionServerIdentifier, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue,
		dhcpv4.OptionClassIdentifier, dhcpv4.OptionClientIdentifier, dhcpv4.OptionRelayAgentInformation,
	} {
		m[int(o.Code())] = o
	}
	return m
}

func renderValue(v []byte) string {
	printable := len(v) > 1
	for _, c := range v {
		if c < 0x20 || c > 0x7e {
			printable = false
		}
	}
	if printable {
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("% x", v)
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (run go test -update if intended)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
