// Package hostpower drives a host's power by name: it looks the host's BMC
// up in the store, opens its sealed password and calls the BMC layer. It is
// the adapter between kiln's host names (API, rollout engine) and pkg/bmc's
// targets.
package hostpower

import (
	"context"
	"errors"
	"fmt"

	"github.com/immutableinfra/kiln/pkg/bmc"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

// BMC is the BMC layer (implemented by *bmc.Manager and *bmc.Fake).
type BMC interface {
	PowerState(ctx context.Context, t bmc.Target) (bmc.PowerState, error)
	SetPower(ctx context.Context, t bmc.Target, a bmc.PowerAction) error
	SetNextBoot(ctx context.Context, t bmc.Target, dev bmc.BootDevice, mode bmc.BootMode) error
}

// Hosts reads hosts and their sealed BMC passwords (implemented by *store.Store).
type Hosts interface {
	GetHost(ctx context.Context, name string) (fleet.Host, error)
	Secret(ctx context.Context, host string) ([]byte, error)
}

// Opener opens a sealed password (implemented by *secret.Box).
type Opener interface {
	Open(label string, sealed []byte) ([]byte, error)
}

// ErrNoBMC: the host has no BMC configured.
var ErrNoBMC = errors.New("host has no bmc")

// Power drives hosts by name.
type Power struct {
	BMC    BMC
	Hosts  Hosts
	Opener Opener
}

func (p *Power) target(ctx context.Context, host string) (bmc.Target, fleet.Host, error) {
	h, err := p.Hosts.GetHost(ctx, host)
	if err != nil {
		return bmc.Target{}, h, err
	}
	if h.BMC == nil || h.BMC.URL == "" {
		return bmc.Target{}, h, fmt.Errorf("host %s: %w (add one with kiln host add --bmc)", host, ErrNoBMC)
	}
	t := bmc.Target{Host: host, URL: h.BMC.URL, InsecureTLS: h.BMC.InsecureTLS}
	if h.BMC.HasPassword {
		sealed, err := p.Hosts.Secret(ctx, host)
		if err != nil {
			return t, h, fmt.Errorf("host %s: bmc password: %w", host, err)
		}
		pw, err := p.Opener.Open(host, sealed)
		if err != nil {
			return t, h, fmt.Errorf("host %s: bmc password: %w", host, err)
		}
		t.Password = string(pw)
	}
	return t, h, nil
}

// PowerState returns "on", "off" or "unknown".
func (p *Power) PowerState(ctx context.Context, host string) (string, error) {
	t, _, err := p.target(ctx, host)
	if err != nil {
		return "", err
	}
	st, err := p.BMC.PowerState(ctx, t)
	return string(st), err
}

// SetPower runs "on", "off" or "cycle".
func (p *Power) SetPower(ctx context.Context, host, action string) error {
	t, _, err := p.target(ctx, host)
	if err != nil {
		return err
	}
	return p.BMC.SetPower(ctx, t, bmc.PowerAction(action))
}

// PowerCycle power-cycles the host (powers it on when off).
func (p *Power) PowerCycle(ctx context.Context, host string) error {
	return p.SetPower(ctx, host, string(bmc.ActionCycle))
}

// SetNextBootNetwork makes the host's next boot a network boot, in the
// firmware mode set for the host, else the one it last netbooted with (UEFI
// or legacy), else the BMC's default.
func (p *Power) SetNextBootNetwork(ctx context.Context, host string) error {
	t, h, err := p.target(ctx, host)
	if err != nil {
		return err
	}
	mode := bmc.BootAuto
	switch h.NextBootMode() {
	case fleet.BootModeUEFI:
		mode = bmc.BootUEFI
	case fleet.BootModeBIOS:
		mode = bmc.BootLegacy
	}
	return p.BMC.SetNextBoot(ctx, t, bmc.BootPXE, mode)
}
