package dhcp

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// clientKind is what kind of boot client sent a request.
type clientKind uint8

const (
	kindPlain clientKind = iota // no boot firmware: an OS or kiln-init
	kindPXE                     // PXE firmware that is not iPXE
	kindHTTP                    // UEFI HTTP boot
	kindIPXE                    // iPXE
)

// Client system architectures (option 93, RFC 4578 and the IANA registry).
const (
	archBIOS       = 0
	archEFIIA32    = 6
	archEFIx64BC   = 7
	archEFIx64     = 9
	archEFIARM32   = 10
	archEFIARM64   = 11
	archHTTPIA32   = 15
	archHTTPx64    = 16
	archHTTPARM32  = 18
	archHTTPARM64  = 19
	archUnknown    = 0xffff
	optIPXEEncaps  = 175 // iPXE's encapsulated options
	vendorPXE      = "PXEClient"
	vendorHTTP     = "HTTPClient"
	pxeDiscoveryCt = 6 // PXE vendor sub-option PXE_DISCOVERY_CONTROL
)

type client struct {
	kind clientKind
	arch uint16
}

// classify reads options 60, 77, 93 and 175.
func classify(req *dhcpv4.DHCPv4) client {
	c := client{arch: archUnknown}
	if v := req.Options.Get(dhcpv4.OptionClientSystemArchitectureType); len(v) >= 2 {
		c.arch = binary.BigEndian.Uint16(v)
	}
	vendor := string(req.Options.Get(dhcpv4.OptionClassIdentifier))
	switch {
	case isIPXE(req):
		c.kind = kindIPXE
	case strings.HasPrefix(vendor, vendorHTTP):
		c.kind = kindHTTP
	case strings.HasPrefix(vendor, vendorPXE):
		c.kind = kindPXE
	}
	if c.arch == archUnknown && c.kind != kindPlain {
		// "PXEClient:Arch:00007:UNDI:003016"
		if _, rest, ok := strings.Cut(vendor, ":Arch:"); ok && len(rest) >= 5 {
			if n, err := strconv.ParseUint(rest[:5], 10, 16); err == nil {
				c.arch = uint16(n)
			}
		}
		if c.arch == archUnknown && c.kind == kindPXE {
			c.arch = archBIOS // the oldest PXE ROMs send neither
		}
	}
	return c
}

func isIPXE(req *dhcpv4.DHCPv4) bool {
	if req.Options.Has(dhcpv4.GenericOptionCode(optIPXEEncaps)) {
		return true
	}
	uc := req.Options.Get(dhcpv4.OptionUserClassInformation)
	// Option 77 is either the raw string "iPXE" or an RFC 3004 list.
	return bytes.Equal(uc, []byte("iPXE")) || bytes.Contains(uc, []byte("\x04iPXE"))
}

// bootMode is the firmware family recorded on the host ("" = unknown).
func (c client) bootMode() string {
	if c.kind == kindPlain {
		return ""
	}
	switch c.arch {
	case archBIOS:
		return "bios"
	case archEFIIA32, archEFIx64BC, archEFIx64, archEFIARM32, archEFIARM64,
		archHTTPIA32, archHTTPx64, archHTTPARM32, archHTTPARM64:
		return "uefi"
	}
	return ""
}

// Decision kinds, the label values of kiln_dhcp_decisions_total.
const (
	DecisionBIOSPXE  = "bios_pxe"
	DecisionUEFIPXE  = "uefi_pxe"
	DecisionARM64PXE = "arm64_pxe"
	DecisionHTTPBoot = "http_boot"
	DecisionIPXE     = "ipxe"
	DecisionNone     = "none"
)

// bootFile is the boot decision for one client.
type bootFile struct {
	kind   string // Decision*
	file   string // file field: TFTP name or URL
	vendor string // option 60 to echo, if any
}

// decide picks the boot file. mac is the chaddr, lowercase colon separated.
func (s *Server) decide(c client, mac string) bootFile {
	switch c.kind {
	case kindIPXE:
		return bootFile{kind: DecisionIPXE, file: s.httpBase + "/boot/" + mac + ".ipxe"}
	case kindHTTP:
		switch c.arch {
		case archHTTPx64:
			if s.cfg.Firmware(EFIx64) {
				return bootFile{kind: DecisionHTTPBoot, file: s.httpBase + "/firmware/" + EFIx64, vendor: vendorHTTP}
			}
		case archHTTPARM64:
			if s.cfg.Firmware(ARM64EFI) {
				return bootFile{kind: DecisionHTTPBoot, file: s.httpBase + "/firmware/" + ARM64EFI, vendor: vendorHTTP}
			}
		}
	case kindPXE:
		if s.cfg.NoTFTP {
			break // nothing to fetch: UEFI firmware goes on to HTTP boot
		}
		switch c.arch {
		case archBIOS:
			if s.cfg.Firmware(BIOSFile) {
				return bootFile{kind: DecisionBIOSPXE, file: BIOSFile, vendor: vendorPXE}
			}
		case archEFIx64BC, archEFIx64:
			if s.cfg.Firmware(EFIx64) {
				return bootFile{kind: DecisionUEFIPXE, file: EFIx64, vendor: vendorPXE}
			}
		case archEFIARM64:
			if s.cfg.Firmware(ARM64EFI) {
				return bootFile{kind: DecisionARM64PXE, file: ARM64EFI, vendor: vendorPXE}
			}
		}
	}
	return bootFile{kind: DecisionNone}
}

// pxeVendorOptions is option 43 for PXE clients: PXE_DISCOVERY_CONTROL = 8
// ("boot the file named in this offer, no boot server discovery or menu").
func pxeVendorOptions() []byte { return []byte{pxeDiscoveryCt, 1, 8, 255} }

// applyBoot writes a boot decision into a reply.
func (s *Server) applyBoot(resp *dhcpv4.DHCPv4, b bootFile) {
	if b.file == "" {
		return
	}
	resp.ServerIPAddr = s.serverIP
	resp.BootFileName = b.file
	switch b.vendor {
	case vendorPXE:
		resp.Options.Update(dhcpv4.OptClassIdentifier(vendorPXE))
		resp.Options.Update(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions()))
	case vendorHTTP:
		resp.Options.Update(dhcpv4.OptClassIdentifier(vendorHTTP))
	}
}
