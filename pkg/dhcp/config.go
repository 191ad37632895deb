package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"time"
)

// ErrConfig is wrapped by every Config.Validate error; the message names the
// field.
var ErrConfig = errors.New("invalid dhcp config")

// Mode selects how the server answers.
type Mode string

const (
	// ModeReservation answers known MACs (and unknown ones when discovery is
	// on) with an address: the host's fixed IP, or a pool lease. It is the
	// default (the zero Mode).
	ModeReservation Mode = "reservation"
	// ModeProxy is proxyDHCP: no address, only boot options, and only to PXE
	// clients; the site's own DHCP server hands out addresses.
	ModeProxy Mode = "proxy"
	// ModeOff answers nothing (Serve still drains and counts packets).
	ModeOff Mode = "off"
)

// Firmware file names the server hands out. The x86 names match kiln's
// firmware package; ARM64EFI is served only when Config.Firmware says so.
const (
	BIOSFile  = "undionly.kpxe"
	EFIx64    = "ipxe.efi"
	ARM64EFI  = "snponly-arm64.efi"
	scriptFmt = "%s/boot/%s.ipxe"
)

// Pool is the address range for hosts without a fixed IP and, with
// discovery, for unknown MACs.
type Pool struct {
	// Subnet is the pool's network; Start..End must lie inside it. Relayed
	// requests are served from the pool only when their giaddr is in Subnet.
	Subnet netip.Prefix
	// Start and End bound the range, both included.
	Start, End netip.Addr
	// Router (option 3) is optional; it must be inside Subnet.
	Router netip.Addr
	// DNS servers (option 6), optional.
	DNS []netip.Addr
	// Domain (option 15), optional.
	Domain string
	// LeaseTime is the lease duration; zero means one hour.
	LeaseTime time.Duration
}

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Mode: reservation (default), proxy or off.
	Mode Mode
	// ServerIP is the advertised address: siaddr, option 54 and the TFTP
	// server. Required unless Mode is off.
	ServerIP netip.Addr
	// HTTPBase is kilnd's HTTP base URL (scheme http, no path), used for
	// iPXE script URLs and UEFI HTTP boot. The zero value means
	// http://ServerIP (port 80).
	HTTPBase url.URL
	// Pool is optional; nil means known hosts need a fixed IP and discovery
	// cannot hand out addresses (in reservation mode).
	Pool *Pool
	// NoTFTP says kilnd serves no TFTP: PXE firmware that is not iPXE gets
	// an address but no boot file, so UEFI firmware falls back to HTTP
	// boot. The zero value offers the iPXE binaries over TFTP.
	NoTFTP bool
	// Discovery answers unknown MACs: a pool lease (reservation mode) and a
	// boot file pointing at their discovery script.
	Discovery bool
	// Firmware reports whether a firmware file (BIOSFile, EFIx64, ARM64EFI)
	// is served. nil means BIOSFile and EFIx64 are and ARM64EFI is not. It is
	// called per boot decision and must be safe for concurrent use.
	Firmware func(name string) bool
	// Workers bounds concurrent packet handling (parse, host lookup,
	// decision); Serve queues up to 64 packets per worker and drops and
	// counts the rest. Zero means 4 per CPU.
	Workers int
	// PendingACKs bounds the ACKs waiting for their lease to become durable.
	// Workers hand an ACK over and move on, so a slow fsync never delays
	// DISCOVERs, and all pending leases share the store's write batches.
	// REQUESTs beyond the bound are dropped (clients retransmit). Zero means
	// 4096.
	PendingACKs int
	// OfferHold is how long an offered address stays reserved for the
	// client; zero means 30s.
	OfferHold time.Duration
	// DeclineHold is how long a declined address stays out of use; zero
	// means 10 minutes.
	DeclineHold time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Mode == "" {
		d.Mode = ModeReservation
	}
	if d.HTTPBase.Host == "" && d.ServerIP.IsValid() {
		d.HTTPBase = url.URL{Scheme: "http", Host: d.ServerIP.String()}
	}
	if d.Pool != nil {
		p := *d.Pool
		if p.LeaseTime == 0 {
			p.LeaseTime = time.Hour
		}
		d.Pool = &p
	}
	if d.Firmware == nil {
		d.Firmware = func(name string) bool { return name == BIOSFile || name == EFIx64 }
	}
	if d.Workers == 0 {
		d.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if d.PendingACKs == 0 {
		d.PendingACKs = 4096
	}
	if d.OfferHold == 0 {
		d.OfferHold = 30 * time.Second
	}
	if d.DeclineHold == 0 {
		d.DeclineHold = 10 * time.Minute
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return d
}

// Validate checks the config; the error wraps ErrConfig and names the field.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	switch c.Mode {
	case "", ModeReservation, ModeProxy:
	case ModeOff:
		return nil
	default:
		return bad("Mode %q is not reservation, proxy or off", c.Mode)
	}
	if !c.ServerIP.IsValid() {
		return bad("ServerIP is required")
	}
	if !c.ServerIP.Is4() || c.ServerIP.IsUnspecified() {
		return bad("ServerIP %s is not a usable IPv4 address", c.ServerIP)
	}
	if c.HTTPBase.Host != "" || c.HTTPBase.Scheme != "" {
		if c.HTTPBase.Scheme != "http" {
			return bad("HTTPBase %q: scheme must be http", c.HTTPBase.String())
		}
		if c.HTTPBase.Host == "" {
			return bad("HTTPBase %q has no host", c.HTTPBase.String())
		}
		if strings.Trim(c.HTTPBase.Path, "/") != "" || c.HTTPBase.RawQuery != "" || c.HTTPBase.User != nil {
			return bad("HTTPBase %q must have no path, query or user", c.HTTPBase.String())
		}
	}
	if c.Workers < 0 {
		return bad("Workers %d is negative", c.Workers)
	}
	if c.PendingACKs < 0 {
		return bad("PendingACKs %d is negative", c.PendingACKs)
	}
	if c.OfferHold < 0 {
		return bad("OfferHold %s is negative", c.OfferHold)
	}
	if c.DeclineHold < 0 {
		return bad("DeclineHold %s is negative", c.DeclineHold)
	}
	if p := c.Pool; p != nil {
		if !p.Subnet.IsValid() || !p.Subnet.Addr().Is4() {
			return bad("Pool.Subnet %s is not an IPv4 prefix", p.Subnet)
		}
		if p.Subnet.Bits() < 8 || p.Subnet.Bits() > 30 {
			return bad("Pool.Subnet %s: prefix length must be 8 to 30", p.Subnet)
		}
		if !p.Start.Is4() || !p.Subnet.Contains(p.Start) {
			return bad("Pool.Start %s is outside Pool.Subnet %s", p.Start, p.Subnet)
		}
		if !p.End.Is4() || !p.Subnet.Contains(p.End) {
			return bad("Pool.End %s is outside Pool.Subnet %s", p.End, p.Subnet)
		}
		if p.End.Less(p.Start) {
			return bad("Pool.Start %s is after Pool.End %s", p.Start, p.End)
		}
		if p.Router.IsValid() && (!p.Router.Is4() || !p.Subnet.Contains(p.Router)) {
			return bad("Pool.Router %s is outside Pool.Subnet %s", p.Router, p.Subnet)
		}
		for i, d := range p.DNS {
			if !d.Is4() {
				return bad("Pool.DNS[%d] %s is not IPv4", i, d)
			}
		}
		if p.LeaseTime < 0 || p.LeaseTime > 0 && p.LeaseTime < time.Minute {
			return bad("Pool.LeaseTime %s must be at least 1m", p.LeaseTime)
		}
		if len(p.Domain) > 255 {
			return bad("Pool.Domain is longer than 255 bytes")
		}
	}
	return nil
}
