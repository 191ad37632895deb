package hostpower

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/immutableinfra/kiln/pkg/bmc"
	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/secret"
	"github.com/immutableinfra/kiln/pkg/store"
)

func TestPowerResolvesHostsAndPasswords(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "kiln.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	box, _ := secret.LoadOrCreateKey(filepath.Join(t.TempDir(), "key"))
	sealed, _ := box.Seal("uefi", []byte("s3cret"))
	st.CreateHostSecret(ctx, fleet.Host{Name: "uefi", MACs: []string{"52:54:00:00:00:01"}, BootMode: "uefi",
		BMC: &fleet.BMC{URL: "ipmi://admin@198.18.0.5:623", HasPassword: true}}, sealed)
	st.CreateHost(ctx, fleet.Host{Name: "nobmc", MACs: []string{"52:54:00:00:00:02"}})

	fake := &bmc.Fake{}
	var gotPW string
	fake.OnPowerOn = func(ctx context.Context, host string, dev bmc.BootDevice, mode bmc.BootMode) {}
	p := &Power{BMC: recordPW{fake, &gotPW}, Hosts: st, Opener: box}
	if err := p.SetNextBootNetwork(ctx, "uefi"); err != nil {
		t.Fatal(err)
	}
	if dev, mode := fake.NextBoot("uefi"); dev != bmc.BootPXE || mode != bmc.BootUEFI {
		t.Fatalf("next boot = %s %s", dev, mode)
	}
	if err := p.PowerCycle(ctx, "uefi"); err != nil {
		t.Fatal(err)
	}
	if st, _ := p.PowerState(ctx, "uefi"); st != "on" {
		t.Fatalf("state after cycle = %s", st)
	}
	if gotPW != "s3cret" {
		t.Fatal("the BMC layer did not get the opened password")
	}
	if err := p.PowerCycle(ctx, "nobmc"); !errors.Is(err, ErrNoBMC) || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("host without bmc: %v", err)
	}
	if err := p.PowerCycle(ctx, "ghost"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("unknown host: %v", err)
	}
}

type recordPW struct {
	*bmc.Fake
	pw *string
}

func (r recordPW) SetPower(ctx context.Context, t bmc.Target, a bmc.PowerAction) error {
	*r.pw = t.Password
	return r.Fake.SetPower(ctx, t, a)
}
