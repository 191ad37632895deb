package bmc

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Fake is an in-memory stand-in for *Manager with the same methods, for the
// tests of packages that drive BMCs. It is safe for concurrent use. Hosts
// are keyed by Target.Host and start powered off with no next boot device.
// Every call is recorded, failed ones included. The zero value is ready to
// use.
type Fake struct {
	// OnPowerOn, if set, is called after every transition to on (SetPower
	// on from off, and each power cycle), with the one-time boot device
	// that was pending (empty if none; the fake then clears it, as a BMC
	// does). It runs synchronously in the SetPower caller's goroutine with no
	// lock held, so it may call back into the Fake; start a goroutine for
	// slow work.
	OnPowerOn func(ctx context.Context, host string, boot BootDevice, mode BootMode)

	mu    sync.Mutex
	hosts map[string]*fakeHost
	calls []Call
}

// Call is one recorded call to a Fake.
type Call struct {
	// Host is Target.Host.
	Host string
	// Op is "power status", "power on", "power off", "power cycle" or
	// "next boot" (the same text as Error.Op).
	Op string
	// Device and Mode are set for "next boot".
	Device BootDevice
	Mode   BootMode
	// Err is what the call returned.
	Err error
}

type fakeHost struct {
	power    PowerState
	nextBoot BootDevice
	bootMode BootMode

	failErr   error // returned by every call while set
	failNext  int   // number of next calls that fail with failNextErr
	failNextE error
	hang      bool
	onLatency time.Duration
	flipAfter bool // after the next power on, the host reads off again
}

func (f *Fake) host(name string) *fakeHost {
	if f.hosts == nil {
		f.hosts = make(map[string]*fakeHost)
	}
	h := f.hosts[name]
	if h == nil {
		h = &fakeHost{power: PowerOff}
		f.hosts[name] = h
	}
	return h
}

// SetPowerState sets a host's power state as if it changed outside kiln.
func (f *Fake) SetPowerState(host string, st PowerState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.host(host).power = st
}

// FlipPower toggles a host's power state now (on <-> off; unknown becomes
// on), as if it crashed or was switched by hand.
func (f *Fake) FlipPower(host string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.host(host)
	if h.power == PowerOn {
		h.power = PowerOff
	} else {
		h.power = PowerOn
	}
}

// FlipAfterPowerOn makes the host read off again right after its next
// power on (after OnPowerOn ran): a host that does not stay up.
func (f *Fake) FlipAfterPowerOn(host string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.host(host).flipAfter = on
}

// FailWith makes every call for host fail with err wrapped in *Error (so
// errors.Is sees err). nil clears it.
func (f *Fake) FailWith(host string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.host(host).failErr = err
}

// FailNext makes the next n calls for host fail with err.
func (f *Fake) FailNext(host string, n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.host(host)
	h.failNext, h.failNextE = n, err
}

// Hang makes every call for host block until its context is done; it then
// fails with ErrTimeout (deadline) or context.Canceled.
func (f *Fake) Hang(host string, hang bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.host(host).hang = hang
}

// PowerOnLatency delays every power on (and the on half of a cycle) of host
// by d, or until the caller's context is done.
func (f *Fake) PowerOnLatency(host string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.host(host).onLatency = d
}

// Calls returns a copy of the calls recorded for host, oldest first.
func (f *Fake) Calls(host string) []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Call
	for _, c := range f.calls {
		if c.Host == host {
			out = append(out, c)
		}
	}
	return out
}

// Ops returns the Op of every call recorded for host, oldest first.
func (f *Fake) Ops(host string) []string {
	var out []string
	for _, c := range f.Calls(host) {
		out = append(out, c.Op)
	}
	return out
}

// AllCalls returns a copy of every recorded call, oldest first.
func (f *Fake) AllCalls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// NextBoot returns the pending one-time boot device and mode of host.
func (f *Fake) NextBoot(host string) (BootDevice, BootMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.host(host)
	return h.nextBoot, h.bootMode
}

// PowerState reports the host's power state.
func (f *Fake) PowerState(ctx context.Context, t Target) (PowerState, error) {
	var st PowerState
	err := f.do(ctx, t, Call{Op: opPowerStatus.text}, func(h *fakeHost) { st = h.power })
	if err != nil {
		return PowerUnknown, err
	}
	return st, nil
}

// SetPower applies a power action with the Manager's semantics: on/off are
// idempotent, cycle powers on a host that is off.
func (f *Fake) SetPower(ctx context.Context, t Target, a PowerAction) error {
	o, ok := powerOp(a)
	if !ok {
		err := &Error{Host: t.Host, Op: "power " + string(a), Err: &cause{kind: ErrUnsupported, msg: fmt.Sprintf("unknown power action %q", a)}}
		f.record(Call{Host: t.Host, Op: err.Op, Err: err})
		return err
	}
	var poweredOn bool
	var boot BootDevice
	var mode BootMode
	var latency time.Duration
	err := f.do(ctx, t, Call{Op: o.text}, func(h *fakeHost) {
		latency = h.onLatency
		switch {
		case a == ActionOff:
			h.power = PowerOff
		case a == ActionOn && h.power == PowerOn:
		default:
			h.power = PowerOn
			poweredOn = true
			boot, mode = h.nextBoot, h.bootMode
			h.nextBoot, h.bootMode = "", ""
		}
	})
	if err != nil || !poweredOn {
		return err
	}
	if latency > 0 {
		tm := time.NewTimer(latency)
		select {
		case <-ctx.Done():
			tm.Stop()
			// The power command was sent; the host is on regardless.
		case <-tm.C:
		}
	}
	if f.OnPowerOn != nil {
		f.OnPowerOn(ctx, t.Host, boot, mode)
	}
	f.mu.Lock()
	if h := f.host(t.Host); h.flipAfter {
		h.power = PowerOff
	}
	f.mu.Unlock()
	return nil
}

// SetNextBoot records a one-time boot device, consumed by the next power on.
func (f *Fake) SetNextBoot(ctx context.Context, t Target, dev BootDevice, mode BootMode) error {
	if dev != BootPXE && dev != BootDisk {
		err := &Error{Host: t.Host, Op: opNextBoot.text, Err: &cause{kind: ErrUnsupported, msg: fmt.Sprintf("unknown boot device %q", dev)}}
		f.record(Call{Host: t.Host, Op: err.Op, Device: dev, Mode: mode, Err: err})
		return err
	}
	return f.do(ctx, t, Call{Op: opNextBoot.text, Device: dev, Mode: mode}, func(h *fakeHost) {
		h.nextBoot, h.bootMode = dev, mode
	})
}

func (f *Fake) record(c Call) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

// do applies the failure switches, then fn under the lock, and records c.
func (f *Fake) do(ctx context.Context, t Target, c Call, fn func(*fakeHost)) error {
	c.Host = t.Host
	var ep Endpoint
	wrap := func(err error) error {
		e := &Error{Host: t.Host, Op: c.Op, Err: err}
		if ep.Driver != "" {
			e.Driver, e.BMC = ep.Driver, ep.Addr()
		}
		return e
	}
	if t.URL != "" {
		var err error
		if ep, err = ParseURL(t.URL); err != nil {
			c.Err = wrap(err)
			f.record(c)
			return c.Err
		}
	}
	f.mu.Lock()
	h := f.host(t.Host)
	hang := h.hang
	var err error
	switch {
	case h.failErr != nil:
		err = wrap(h.failErr)
	case h.failNext > 0:
		h.failNext--
		err = wrap(h.failNextE)
	case ctx.Err() != nil:
		err = wrap(&cause{ctxErr: ctx.Err(), msg: "context done"})
	case !hang:
		fn(h)
	}
	if err != nil || !hang {
		c.Err = err
		f.calls = append(f.calls, c)
		f.mu.Unlock()
		return err
	}
	f.mu.Unlock()
	<-ctx.Done()
	cs := &cause{ctxErr: ctx.Err(), msg: "no answer from the BMC"}
	if ctx.Err() == context.DeadlineExceeded {
		cs.kind = ErrTimeout
	}
	c.Err = wrap(cs)
	f.record(c)
	return c.Err
}
