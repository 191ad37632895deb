// Command kilnd is kiln's provisioning daemon: DHCP, TFTP and HTTP boot,
// BMC control, rollouts and the fleet's state. Configuration comes from a
// YAML file (--config), KILN_* environment variables and flags; flags win
// over the environment, which wins over the file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/immutableinfra/kiln/pkg/daemon"
	"github.com/immutableinfra/kiln/pkg/store"
)

func main() {
	// bmclib's Redfish client prints every request, BMC passwords included,
	// when this is set: never let it reach the BMC layer.
	os.Unsetenv("DEBUG_BMCLIB")
	cfg, err := loadConfig(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kilnd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kilnd:", err)
		if errors.Is(err, store.ErrLocked) {
			os.Exit(3)
		}
		os.Exit(1)
	}
}

// loadConfig layers the YAML file, the environment and the flags.
func loadConfig(args []string) (daemon.Config, error) {
	var cfg daemon.Config
	fs := flag.NewFlagSet("kilnd", flag.ContinueOnError)
	configFile := fs.String("config", os.Getenv("KILN_CONFIG"), "YAML config file (keys are the flag names) [KILN_CONFIG]")
	type setter struct {
		name, env string
		set       func(string) error
	}
	var setters []setter
	str := func(p *string, name, def, usage string) {
		fs.String(name, "", fmt.Sprintf("%s (default %q)", usage, def))
		setters = append(setters, setter{name, envName(name), func(v string) error { *p = v; return nil }})
	}
	dur := func(p *time.Duration, name, def, usage string) {
		fs.String(name, "", fmt.Sprintf("%s (default %s)", usage, def))
		setters = append(setters, setter{name, envName(name), func(v string) error {
			d, err := time.ParseDuration(v)
			*p = d
			return err
		}})
	}
	integer := func(p *int, name, def, usage string) {
		fs.String(name, "", fmt.Sprintf("%s (default %s)", usage, def))
		setters = append(setters, setter{name, envName(name), func(v string) error {
			_, err := fmt.Sscan(v, p)
			return err
		}})
	}
	boolean := func(p *bool, name, usage string) {
		fs.Var(new(boolValue), name, usage+" (default false)")
		setters = append(setters, setter{name, envName(name), func(v string) error {
			switch v {
			case "true", "1", "yes":
				*p = true
			case "false", "0", "no":
				*p = false
			default:
				return fmt.Errorf("want true or false")
			}
			return nil
		}})
	}
	list := func(p *[]string, name, usage string) {
		fs.String(name, "", usage+" (comma separated)")
		setters = append(setters, setter{name, envName(name), func(v string) error { *p = strings.Split(v, ","); return nil }})
	}
	str(&cfg.DataDir, "data-dir", daemon.DefaultDataDir, "state folder: database, blobs, admin token, secret key")
	str(&cfg.APIListen, "api-listen", daemon.DefaultAPIListen, "API (and boot endpoints) listen address")
	str(&cfg.BootListen, "boot-listen", "", "separate listen address for the boot endpoints")
	str(&cfg.ServerURL, "server-url", "http://ADVERTISE-IP:PORT", "URL hosts use to reach the boot endpoints")
	str(&cfg.Interface, "interface", "", "interface DHCP and TFTP serve (empty: HTTP only)")
	str(&cfg.AdvertiseIP, "advertise-ip", "first IPv4 of --interface", "address advertised to hosts")
	str(&cfg.DHCPMode, "dhcp-mode", "reservation", "reservation, proxy or off")
	str(&cfg.DHCPSubnet, "dhcp-subnet", "", "pool subnet, e.g. 198.18.0.0/15")
	str(&cfg.DHCPRange, "dhcp-range", "", "pool range START-END")
	str(&cfg.DHCPRouter, "dhcp-router", "", "router (option 3) for pool leases")
	list(&cfg.DHCPDNS, "dhcp-dns", "DNS servers for pool leases")
	str(&cfg.DHCPDomain, "dhcp-domain", "", "domain name (option 15) for pool leases")
	dur(&cfg.DHCPLeaseTime, "dhcp-lease-time", "1h", "pool lease time")
	boolean(&cfg.Discovery, "discovery", "answer unknown MACs from the pool")
	str(&cfg.TFTP, "tftp", "on", "TFTP server on the interface: on or off")
	str(&cfg.TFTPAssets, "tftp-assets", "", "extra folder served over TFTP")
	str(&cfg.KilnInit, "kiln-init", "kiln-init beside kilnd", "kiln-init binary for the initramfs kilnd builds")
	str(&cfg.SecretKey, "secret-key", "DATA_DIR/secret.key", "AES key file for BMC passwords")
	integer(&cfg.BMCConcurrency, "bmc-concurrency", "16", "concurrent BMC operations")
	dur(&cfg.BMCTimeout, "bmc-timeout", "30s", "timeout of each BMC call")
	dur(&cfg.BootTimeout, "boot-timeout", "20m", "default boot timeout of rollouts")
	dur(&cfg.Retention, "retention", "720h", "images named in a host's history this recently are kept")
	str(&cfg.KernelCmdline, "kernel-cmdline", "", "appended to every netboot kernel command line")
	str(&cfg.StateMount, "state-mount", daemon.DefaultStateMount, "where booted images get a filesystem labelled kiln-state, if the host has one (off: never)")
	str(&cfg.PprofListen, "pprof-listen", "", "serve Go profiles at /debug/pprof/ on this address (loopback; no token)")
	str(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	str(&cfg.LogFormat, "log-format", "text", "text or json")
	for _, s := range setters {
		f := fs.Lookup(s.name)
		f.Usage += " [" + s.env + "]"
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *configFile != "" {
		b, err := os.ReadFile(*configFile)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", *configFile, err)
		}
	}
	explicit := map[string]string{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = f.Value.String() })
	for _, s := range setters {
		v, fromFlag := explicit[s.name]
		src := "--" + s.name
		if !fromFlag {
			var ok bool
			if v, ok = os.LookupEnv(s.env); !ok {
				continue
			}
			src = s.env
		}
		if err := s.set(v); err != nil {
			return cfg, fmt.Errorf("%s: %q: %v", src, v, err)
		}
	}
	return cfg, nil
}

// boolValue lets a boolean flag stand alone (--discovery) or take a value
// (--discovery=false); the layering code parses what it holds.
type boolValue string

func (b *boolValue) String() string     { return string(*b) }
func (b *boolValue) Set(v string) error { *b = boolValue(v); return nil }
func (b *boolValue) IsBoolFlag() bool   { return true }

func envName(flag string) string {
	return "KILN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}
