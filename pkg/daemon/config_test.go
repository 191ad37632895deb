package daemon

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

func TestConfigDefaultsAndErrors(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != DefaultDataDir || c.APIListen != DefaultAPIListen || c.SecretKey != "/var/lib/kiln/secret.key" ||
		c.DHCPMode != "reservation" || c.TFTP != "on" || c.StateMount != DefaultStateMount || c.LogLevel != "info" || c.LogFormat != "text" {
		t.Fatalf("defaults: %+v", c)
	}
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"api listen", Config{APIListen: "8080"}, "api-listen"},
		{"boot listen", Config{BootListen: "x"}, "boot-listen"},
		{"pprof listen", Config{PprofListen: "localhost"}, "pprof-listen"},
		{"dhcp mode", Config{DHCPMode: "relay"}, "dhcp-mode"},
		{"tftp", Config{TFTP: "yes"}, "tftp"},
		{"relative state mount", Config{StateMount: "var/state"}, "state-mount"},
		{"state mount with a space", Config{StateMount: "/var/my state"}, "state-mount"},
		{"advertise ip", Config{AdvertiseIP: "::1"}, "advertise-ip"},
		{"server url", Config{ServerURL: "ftp://x"}, "server-url"},
		{"server url with path", Config{ServerURL: "http://x/kiln"}, "server-url"},
		{"pool half given", Config{DHCPSubnet: "198.18.0.0/15"}, "dhcp-range"},
		{"negative concurrency", Config{BMCConcurrency: -1}, "bmc-concurrency"},
		{"negative timeout", Config{BootTimeout: -time.Second}, "boot-timeout"},
		{"log level", Config{LogLevel: "loud"}, "log-level"},
		{"log format", Config{LogFormat: "xml"}, "log-format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			if !errors.Is(err, fleet.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want ErrInvalid naming %s", err, tc.field)
			}
		})
	}
}

func TestParsePool(t *testing.T) {
	p, err := parsePool(Config{DHCPSubnet: "198.18.0.0/15", DHCPRange: "198.18.10.1 - 198.18.10.250", DHCPRouter: "198.18.0.1", DHCPDNS: []string{"198.18.0.53"}, DHCPDomain: "r12.example"})
	if err != nil || p.Start.String() != "198.18.10.1" || p.End.String() != "198.18.10.250" || p.Router.String() != "198.18.0.1" || len(p.DNS) != 1 || p.Domain != "r12.example" {
		t.Fatalf("%+v %v", p, err)
	}
	for _, c := range []Config{
		{DHCPSubnet: "198.18.0.0", DHCPRange: "198.18.10.1-198.18.10.2"},
		{DHCPSubnet: "198.18.0.0/15", DHCPRange: "198.18.10.1"},
		{DHCPSubnet: "198.18.0.0/15", DHCPRange: "a-b"},
		{DHCPSubnet: "198.18.0.0/15", DHCPRange: "198.18.10.1-198.18.10.2", DHCPRouter: "gw"},
		{DHCPSubnet: "198.18.0.0/15", DHCPRange: "198.18.10.1-198.18.10.2", DHCPDNS: []string{"dns"}},
	} {
		if _, err := parsePool(c); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("parsePool(%+v) = %v", c, err)
		}
	}
}

func TestBootURL(t *testing.T) {
	ln := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	tests := []struct {
		name      string
		cfg       Config
		advertise string
		want      string
	}{
		{"explicit", Config{ServerURL: "http://boot.example:80"}, "", "http://boot.example:80"},
		{"advertised address", Config{}, "198.18.0.1", "http://198.18.0.1:8080"},
		{"wildcard listener, no interface", Config{}, "", "http://127.0.0.1:8080"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			cfg.AdvertiseIP = tc.advertise
			a, err := advertiseIP(cfg)
			if err != nil {
				t.Fatal(err)
			}
			u, err := bootURL(cfg, a, ln)
			if err != nil || u.String() != tc.want {
				t.Fatalf("got %v %v, want %s", u, err, tc.want)
			}
		})
	}
}

func TestAdminToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), TokenFile)
	tok, err := adminToken(path)
	if err != nil || len(tok) < 40 {
		t.Fatalf("token %q %v", tok, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	again, err := adminToken(path)
	if err != nil || again != tok {
		t.Fatal("the token changed on the second start")
	}
}
