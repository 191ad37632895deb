package labkit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Addresses of the lab network. The bridge holds kilnd's address; hosts get
// leases from the pool; BMCs listen on the bridge address, one port each.
const (
	Subnet     = "198.18.0.0/15"
	BridgeCIDR = "198.18.0.1/15"
	ServerIP   = "198.18.0.1"
	PoolRange  = "198.18.10.1-198.18.10.250"
	Bridge     = "br0"
	APIPort    = 8080
)

// run runs a command and returns its combined output in the error.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// VethPair creates namespaces aNS and bNS joined by one veth pair and
// nothing else: aIf in aNS with address aCIDR, bIf in bNS with bCIDR, lo
// and both ends up. The caller deletes the namespaces.
func VethPair(ctx context.Context, aNS, bNS, aIf, bIf, aCIDR, bCIDR string) error {
	for _, args := range [][]string{
		{"netns", "add", aNS},
		{"netns", "add", bNS},
		{"link", "add", aIf, "netns", aNS, "type", "veth", "peer", "name", bIf, "netns", bNS},
		{"-n", aNS, "addr", "add", aCIDR, "dev", aIf},
		{"-n", bNS, "addr", "add", bCIDR, "dev", bIf},
		{"-n", aNS, "link", "set", "lo", "up"},
		{"-n", bNS, "link", "set", "lo", "up"},
		{"-n", aNS, "link", "set", aIf, "up"},
		{"-n", bNS, "link", "set", bIf, "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// Netns is a private network namespace with a bridge and no route out.
type Netns struct {
	Name string
}

// CreateNetns creates namespace name with lo up and a bridge holding
// BridgeCIDR. An existing namespace of that name is deleted first.
func CreateNetns(ctx context.Context, name string) (*Netns, error) {
	if err := ValidNetnsName(name); err != nil {
		return nil, err
	}
	exec.CommandContext(ctx, "ip", "netns", "del", name).Run()
	n := &Netns{Name: name}
	steps := [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", Bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"-n", name, "addr", "add", BridgeCIDR, "dev", Bridge},
		{"-n", name, "link", "set", Bridge, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			n.Delete()
			return nil, err
		}
	}
	return n, nil
}

// ValidNetnsName refuses names ip(8) or a shell would mangle.
func ValidNetnsName(name string) error {
	if name == "" || len(name) > 32 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return fmt.Errorf("labkit: netns name %q: use 1-32 of a-z, 0-9 and '-'", name)
	}
	return nil
}

// AddTap adds a tap device enslaved to the bridge.
func (n *Netns) AddTap(ctx context.Context, tap string) error {
	if err := run(ctx, "ip", "-n", n.Name, "tuntap", "add", tap, "mode", "tap"); err != nil {
		return err
	}
	return run(ctx, "ip", "-n", n.Name, "link", "set", tap, "master", Bridge, "up")
}

// Command returns cmd to be run inside the namespace.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Delete removes the namespace (its bridge and taps go with it). Processes
// still inside keep it alive until they exit: stop them first.
func (n *Netns) Delete() error {
	out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
	return nil
}

// Exists reports whether a namespace of that name exists.
func NetnsExists(name string) bool {
	_, err := os.Stat("/run/netns/" + name)
	return err == nil
}
