package dhcp

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		field  string // "" = valid
	}{
		{name: "test config is valid", mutate: func(*Config) {}},
		{name: "off needs nothing", mutate: func(c *Config) { *c = Config{Mode: ModeOff} }},
		{name: "proxy without pool", mutate: func(c *Config) { c.Mode, c.Pool = ModeProxy, nil }},
		{name: "unknown mode", mutate: func(c *Config) { c.Mode = "dhcpd" }, field: "Mode"},
		{name: "server ip missing", mutate: func(c *Config) { c.ServerIP = netip.Addr{} }, field: "ServerIP"},
		{name: "server ip v6", mutate: func(c *Config) { c.ServerIP = netip.MustParseAddr("2001:db8::1") }, field: "ServerIP"},
		{name: "https base", mutate: func(c *Config) { c.HTTPBase = url.URL{Scheme: "https", Host: "x"} }, field: "HTTPBase"},
		{name: "base with path", mutate: func(c *Config) { c.HTTPBase = url.URL{Scheme: "http", Host: "x", Path: "/kiln"} }, field: "HTTPBase"},
		{name: "negative workers", mutate: func(c *Config) { c.Workers = -1 }, field: "Workers"},
		{name: "negative offer hold", mutate: func(c *Config) { c.OfferHold = -time.Second }, field: "OfferHold"},
		{name: "subnet missing", mutate: func(c *Config) { c.Pool.Subnet = netip.Prefix{} }, field: "Pool.Subnet"},
		{name: "subnet too small", mutate: func(c *Config) { c.Pool.Subnet = netip.MustParsePrefix("198.18.1.0/31") }, field: "Pool.Subnet"},
		{name: "start outside subnet", mutate: func(c *Config) { c.Pool.Start = netip.MustParseAddr("10.0.0.1") }, field: "Pool.Start"},
		{name: "end outside subnet", mutate: func(c *Config) { c.Pool.End = netip.MustParseAddr("10.0.0.1") }, field: "Pool.End"},
		{name: "start after end", mutate: func(c *Config) { c.Pool.Start, c.Pool.End = c.Pool.End, c.Pool.Start }, field: "Pool.Start"},
		{name: "router outside subnet", mutate: func(c *Config) { c.Pool.Router = netip.MustParseAddr("10.0.0.1") }, field: "Pool.Router"},
		{name: "dns v6", mutate: func(c *Config) { c.Pool.DNS = []netip.Addr{netip.MustParseAddr("::1")} }, field: "Pool.DNS[0]"},
		{name: "lease too short", mutate: func(c *Config) { c.Pool.LeaseTime = time.Second }, field: "Pool.LeaseTime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(&clock{t: t0})
			tc.mutate(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if _, err := New(c, newFakeHosts(), newMemLeases(), nil, nil); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.field+" ") {
				t.Fatalf("Validate = %v, want ErrConfig naming %s", err, tc.field)
			}
			if _, err := New(c, newFakeHosts(), newMemLeases(), nil, nil); !errors.Is(err, ErrConfig) {
				t.Fatalf("New = %v, want ErrConfig", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{ServerIP: netip.MustParseAddr("198.18.0.1"), Pool: &Pool{
		Subnet: netip.MustParsePrefix("198.18.0.0/15"), Start: netip.MustParseAddr("198.18.1.1"), End: netip.MustParseAddr("198.18.1.9"),
	}}
	d := c.withDefaults()
	if d.Mode != ModeReservation || d.HTTPBase.String() != "http://198.18.0.1" || d.Pool.LeaseTime != time.Hour ||
		d.OfferHold != 30*time.Second || d.Workers <= 0 || !d.Firmware(BIOSFile) || !d.Firmware(EFIx64) || d.Firmware(ARM64EFI) {
		t.Fatalf("defaults: %+v", d)
	}
	if c.Pool.LeaseTime != 0 {
		t.Fatal("withDefaults modified the caller's Pool")
	}
}
