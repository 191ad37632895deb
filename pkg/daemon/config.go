// Package daemon assembles kilnd from its typed configuration: it opens the
// store, builds every service (API, HTTP boot, DHCP, TFTP, BMC control, the
// rollout engine) and runs them until the context ends.
package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Config is kilnd's configuration. Every field's zero value means the
// default documented on it. The YAML keys are the flag names.
type Config struct {
	// DataDir holds the database, blobs, admin token and secret key.
	// Default /var/lib/kiln.
	DataDir string `yaml:"data-dir"`
	// APIListen is the address of the API, /healthz, /metrics and, unless
	// BootListen is set, the boot endpoints. Default ":8080".
	APIListen string `yaml:"api-listen"`
	// BootListen, when set, serves the boot endpoints (scripts, blobs,
	// firmware, reports) on a listener of their own.
	BootListen string `yaml:"boot-listen"`
	// ServerURL is how hosts reach the boot endpoints, e.g.
	// http://198.18.0.1:8080. Default: http://ADVERTISE-IP:PORT of the boot
	// listener.
	ServerURL string `yaml:"server-url"`
	// Interface is the network interface DHCP and TFTP serve. Empty: no
	// DHCP and no TFTP (HTTP only, e.g. behind another DHCP server).
	Interface string `yaml:"interface"`
	// AdvertiseIP is the address hosts are told to use. Default: the first
	// IPv4 address of Interface.
	AdvertiseIP string `yaml:"advertise-ip"`
	// DHCPMode is reservation (default), proxy or off.
	DHCPMode string `yaml:"dhcp-mode"`
	// DHCPSubnet, DHCPRange ("START-END"), DHCPRouter, DHCPDNS,
	// DHCPDomain and DHCPLeaseTime (default 1h) define the optional
	// address pool.
	DHCPSubnet    string        `yaml:"dhcp-subnet"`
	DHCPRange     string        `yaml:"dhcp-range"`
	DHCPRouter    string        `yaml:"dhcp-router"`
	DHCPDNS       []string      `yaml:"dhcp-dns"`
	DHCPDomain    string        `yaml:"dhcp-domain"`
	DHCPLeaseTime time.Duration `yaml:"dhcp-lease-time"`
	// Discovery answers unknown MACs with a pool lease.
	Discovery bool `yaml:"discovery"`
	// TFTP is on (default when Interface is set) or off.
	TFTP string `yaml:"tftp"`
	// TFTPAssets is an optional folder served over TFTP beside the
	// embedded iPXE binaries.
	TFTPAssets string `yaml:"tftp-assets"`
	// KilnInit is the kiln-init binary packed into the initramfs kilnd
	// builds. Default: kiln-init beside the kilnd executable.
	KilnInit string `yaml:"kiln-init"`
	// SecretKey is the AES key file for BMC passwords. Default
	// DATA_DIR/secret.key (created with mode 0600).
	SecretKey string `yaml:"secret-key"`
	// BMCConcurrency caps concurrent BMC operations. Default 16.
	BMCConcurrency int `yaml:"bmc-concurrency"`
	// BMCTimeout bounds each BMC call. Default 30s.
	BMCTimeout time.Duration `yaml:"bmc-timeout"`
	// BootTimeout is a rollout's default boot timeout. Default 20m.
	BootTimeout time.Duration `yaml:"boot-timeout"`
	// Retention protects images a host's history named within it from rm
	// and gc. Default 720h (30 days).
	Retention time.Duration `yaml:"retention"`
	// KernelCmdline is appended to every netboot kernel command line.
	KernelCmdline string `yaml:"kernel-cmdline"`
	// StateMount is where, inside a booted image, kiln-init mounts a
	// filesystem labelled kiln-state when the host has one (state that
	// survives reimaging); "off" leaves it unmounted. Default
	// /var/lib/kiln-state.
	StateMount string `yaml:"state-mount"`
	// PprofListen, when set, serves Go's /debug/pprof/ profiles on a
	// listener of its own (keep it on loopback: it needs no token).
	PprofListen string `yaml:"pprof-listen"`
	// LogLevel is debug, info (default), warn or error; LogFormat text
	// (default) or json.
	LogLevel  string `yaml:"log-level"`
	LogFormat string `yaml:"log-format"`
}

// Defaults.
const (
	DefaultDataDir    = "/var/lib/kiln"
	DefaultAPIListen  = ":8080"
	DefaultStateMount = "/var/lib/kiln-state"
)

// withDefaults fills in defaults and checks every field; errors name the
// field by its flag name.
func (c Config) withDefaults() (Config, error) {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.APIListen == "" {
		c.APIListen = DefaultAPIListen
	}
	if c.SecretKey == "" {
		c.SecretKey = filepath.Join(c.DataDir, "secret.key")
	}
	if c.DHCPMode == "" {
		c.DHCPMode = "reservation"
	}
	if c.TFTP == "" {
		c.TFTP = "on"
	}
	if c.StateMount == "" {
		c.StateMount = DefaultStateMount
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("config: %w: %s: %s", fleet.ErrInvalid, field, fmt.Sprintf(format, args...))
	}
	for _, l := range []struct{ field, addr string }{{"api-listen", c.APIListen}, {"boot-listen", c.BootListen}, {"pprof-listen", c.PprofListen}} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			return c, bad(l.field, "%q is not HOST:PORT (%v)", l.addr, err)
		}
	}
	switch c.DHCPMode {
	case "reservation", "proxy", "off":
	default:
		return c, bad("dhcp-mode", "%q (want reservation, proxy or off)", c.DHCPMode)
	}
	if c.TFTP != "on" && c.TFTP != "off" {
		return c, bad("tftp", "%q (want on or off)", c.TFTP)
	}
	if c.StateMount != "off" && (!strings.HasPrefix(c.StateMount, "/") || strings.ContainsAny(c.StateMount, " \t\n\"'")) {
		return c, bad("state-mount", "%q (want an absolute path without spaces or quotes, or off)", c.StateMount)
	}
	if c.AdvertiseIP != "" {
		if a, err := netip.ParseAddr(c.AdvertiseIP); err != nil || !a.Is4() {
			return c, bad("advertise-ip", "%q is not an IPv4 address", c.AdvertiseIP)
		}
	}
	if c.ServerURL != "" {
		u, err := url.Parse(c.ServerURL)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			return c, bad("server-url", "%q is not http://HOST[:PORT]", c.ServerURL)
		}
	}
	if c.DHCPSubnet != "" || c.DHCPRange != "" {
		if c.DHCPSubnet == "" || c.DHCPRange == "" {
			return c, bad("dhcp-range", "a pool needs both dhcp-subnet and dhcp-range")
		}
	}
	if c.BMCConcurrency < 0 {
		return c, bad("bmc-concurrency", "%d is negative", c.BMCConcurrency)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"bmc-timeout", c.BMCTimeout}, {"boot-timeout", c.BootTimeout}, {"retention", c.Retention}, {"dhcp-lease-time", c.DHCPLeaseTime}} {
		if d.v < 0 {
			return c, bad(d.field, "%s is negative", d.v)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return c, bad("log-level", "%q (want debug, info, warn or error)", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c, bad("log-format", "%q (want text or json)", c.LogFormat)
	}
	return c, nil
}
