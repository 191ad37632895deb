package bmc

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// powerController is what consumers (reimage) declare; both implementations
// must satisfy it.
type powerController interface {
	PowerState(ctx context.Context, t Target) (PowerState, error)
	SetPower(ctx context.Context, t Target, a PowerAction) error
	SetNextBoot(ctx context.Context, t Target, dev BootDevice, mode BootMode) error
}

var (
	_ powerController = (*Manager)(nil)
	_ powerController = (*Fake)(nil)
)

func TestFakeRecordsAndBoots(t *testing.T) {
	var booted []string
	var mu sync.Mutex
	f := &Fake{OnPowerOn: func(_ context.Context, host string, dev BootDevice, mode BootMode) {
		mu.Lock()
		defer mu.Unlock()
		booted = append(booted, host+":"+string(dev)+":"+string(mode))
	}}
	tg := Target{Host: "h1", URL: "ipmi://admin@10.0.0.1", Password: "pw"}
	ctx := context.Background()
	steps := []struct {
		name string
		call func() error
	}{
		{"pxe", func() error { return f.SetNextBoot(ctx, tg, BootPXE, BootUEFI) }},
		{"cycle from off", func() error { return f.SetPower(ctx, tg, ActionCycle) }},
		{"on when on", func() error { return f.SetPower(ctx, tg, ActionOn) }},
		{"cycle from on", func() error { return f.SetPower(ctx, tg, ActionCycle) }},
		{"off", func() error { return f.SetPower(ctx, tg, ActionOff) }},
	}
	for _, s := range steps {
		if err := s.call(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	if st, _ := f.PowerState(ctx, tg); st != PowerOff {
		t.Errorf("power = %q, want off", st)
	}
	wantOps := []string{"next boot", "power cycle", "power on", "power cycle", "power off", "power status"}
	if got := f.Ops("h1"); !slices.Equal(got, wantOps) {
		t.Errorf("ops = %v, want %v", got, wantOps)
	}
	// The one-time PXE boot is consumed by the first power on only.
	if want := []string{"h1:pxe:uefi", "h1::"}; !slices.Equal(booted, want) {
		t.Errorf("power-on hook calls = %v, want %v", booted, want)
	}
	if dev, _ := f.NextBoot("h1"); dev != "" {
		t.Errorf("next boot after power on = %q, want cleared", dev)
	}
}

func TestFakeFailureSwitches(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	tests := []struct {
		name  string
		setup func(f *Fake)
		ctx   func() (context.Context, context.CancelFunc)
		check func(t *testing.T, f *Fake, err error)
	}{
		{
			name:  "fail with",
			setup: func(f *Fake) { f.FailWith("h", ErrAuth) },
			check: func(t *testing.T, f *Fake, err error) {
				var be *Error
				if !errors.Is(err, ErrAuth) || !errors.As(err, &be) || be.Host != "h" || be.BMC != "10.0.0.9:623" {
					t.Errorf("err = %v, want *Error wrapping ErrAuth for h", err)
				}
				if st, _ := f.PowerState(ctx, Target{Host: "other"}); st != PowerOff {
					t.Errorf("other hosts are affected")
				}
			},
		},
		{
			name:  "fail next once",
			setup: func(f *Fake) { f.FailNext("h", 1, boom) },
			check: func(t *testing.T, f *Fake, err error) {
				if !errors.Is(err, boom) {
					t.Errorf("first call err = %v, want boom", err)
				}
				if err := f.SetPower(ctx, Target{Host: "h"}, ActionOn); err != nil {
					t.Errorf("second call err = %v, want nil", err)
				}
			},
		},
		{
			name:  "hang until deadline",
			setup: func(f *Fake) { f.Hang("h", true) },
			ctx:   func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 20*time.Millisecond) },
			check: func(t *testing.T, f *Fake, err error) {
				if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err = %v, want ErrTimeout", err)
				}
				if st, _ := f.PowerState(ctx, Target{Host: "x"}); st != PowerOff {
					t.Errorf("hang affected another host")
				}
			},
		},
		{
			name:  "hang until cancel",
			setup: func(f *Fake) { f.Hang("h", true) },
			ctx: func() (context.Context, context.CancelFunc) {
				c, cancel := context.WithCancel(ctx)
				time.AfterFunc(10*time.Millisecond, cancel)
				return c, cancel
			},
			check: func(t *testing.T, f *Fake, err error) {
				if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
					t.Errorf("err = %v, want context.Canceled", err)
				}
			},
		},
		{
			name:  "power on latency is cut short by ctx",
			setup: func(f *Fake) { f.PowerOnLatency("h", time.Hour) },
			ctx:   func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 20*time.Millisecond) },
			check: func(t *testing.T, f *Fake, err error) {
				if err != nil {
					t.Errorf("err = %v; the power command was sent, want nil", err)
				}
				if st, _ := f.PowerState(ctx, Target{Host: "h"}); st != PowerOn {
					t.Errorf("power = %q, want on", st)
				}
			},
		},
		{
			name:  "flip after power on",
			setup: func(f *Fake) { f.FlipAfterPowerOn("h", true) },
			check: func(t *testing.T, f *Fake, err error) {
				if err != nil {
					t.Fatal(err)
				}
				if st, _ := f.PowerState(ctx, Target{Host: "h"}); st != PowerOff {
					t.Errorf("power = %q, want off (host did not stay up)", st)
				}
				f.FlipPower("h")
				if st, _ := f.PowerState(ctx, Target{Host: "h"}); st != PowerOn {
					t.Errorf("FlipPower: power = %q, want on", st)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &Fake{}
			tc.setup(f)
			c, cancel := context.WithCancel(ctx)
			if tc.ctx != nil {
				c, cancel = tc.ctx()
			}
			defer cancel()
			err := f.SetPower(c, Target{Host: "h", URL: "ipmi://admin@10.0.0.9"}, ActionOn)
			tc.check(t, f, err)
			if calls := f.Calls("h"); len(calls) == 0 || calls[0].Op != "power on" || (calls[0].Err == nil) != (err == nil) {
				t.Errorf("first recorded call = %+v, want power on with err %v", calls, err)
			}
		})
	}
}

func TestFakeConcurrentUse(t *testing.T) {
	f := &Fake{}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tg := Target{Host: []string{"a", "b"}[i%2]}
			_ = f.SetNextBoot(context.Background(), tg, BootPXE, BootAuto)
			_ = f.SetPower(context.Background(), tg, ActionCycle)
			_, _ = f.PowerState(context.Background(), tg)
		}()
	}
	wg.Wait()
	if n := len(f.AllCalls()); n != 150 {
		t.Errorf("%d calls recorded, want 150", n)
	}
	if n := len(f.Calls("a")); n != 75 {
		t.Errorf("%d calls for a, want 75", n)
	}
}
