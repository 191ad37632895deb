package bmc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PowerState is a host's power state as reported by its BMC.
type PowerState string

const (
	// PowerOn means the BMC reports the host powered on.
	PowerOn PowerState = "on"
	// PowerOff means the BMC reports the host powered off.
	PowerOff PowerState = "off"
	// PowerUnknown means the BMC answered something else (e.g. a
	// transitional Redfish state such as "PoweringOn").
	PowerUnknown PowerState = "unknown"
)

// PowerAction is a power change requested through SetPower.
type PowerAction string

const (
	// ActionOn powers the host on; a host that is on is left alone.
	ActionOn PowerAction = "on"
	// ActionOff powers the host off hard and waits until the BMC reports it
	// off; a host that is off is left alone.
	ActionOff PowerAction = "off"
	// ActionCycle power-cycles a host that is on and powers on a host that
	// is off, so that the host always ends up booting.
	ActionCycle PowerAction = "cycle"
)

// BootDevice is the device a host boots from next.
type BootDevice string

const (
	// BootPXE boots from the network (PXE / UEFI network boot).
	BootPXE BootDevice = "pxe"
	// BootDisk boots from the local disk.
	BootDisk BootDevice = "disk"
)

// BootMode chooses the firmware boot mode for the next boot.
type BootMode string

const (
	// BootAuto (the zero value) asks for no particular mode: IPMI sends no
	// efiboot flag; Redfish keeps the BootSourceOverrideMode the BMC
	// currently reports (bmclib always sends a mode, so it is read first).
	BootAuto BootMode = ""
	// BootUEFI asks for a UEFI boot.
	BootUEFI BootMode = "uefi"
	// BootLegacy asks for a legacy BIOS boot.
	BootLegacy BootMode = "legacy"
)

// op names an operation: text for errors and logs, label for metrics.
type op struct{ text, label string }

var (
	opPowerStatus = op{"power status", "power_status"}
	opPowerOn     = op{"power on", "power_on"}
	opPowerOff    = op{"power off", "power_off"}
	opPowerCycle  = op{"power cycle", "power_cycle"}
	opNextBoot    = op{"next boot", "next_boot"}
)

// Manager drives BMCs through bmclib. Create it with New; it is safe for
// concurrent use. It holds no connections between calls: every call opens a
// session, does its work and closes the session.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	sem     chan struct{}

	mu    sync.Mutex
	locks map[string]*bmcLock

	// newSess builds a session; New sets it to (*Manager).newSession.
	newSess func(Target, Endpoint) (session, error)
}

// bmcLock serialises sessions to one BMC; refs counts holders and waiters so
// the entry can be dropped when nobody uses it.
type bmcLock struct {
	ch   chan struct{}
	refs int
}

// New validates cfg (zero fields get their defaults, invalid ones give an
// error naming the field) and returns a Manager. log nil discards logs; reg
// nil means metrics are kept but not exported. Registration errors (e.g. a
// second Manager on the same registry) are returned.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:     cfg,
		log:     log,
		metrics: met,
		sem:     make(chan struct{}, cfg.Concurrency),
		locks:   make(map[string]*bmcLock),
	}
	m.newSess = m.newSession
	return m, nil
}

// PowerState returns the host's power state, normalised to PowerOn,
// PowerOff or PowerUnknown.
func (m *Manager) PowerState(ctx context.Context, t Target) (PowerState, error) {
	var st PowerState
	err := m.do(ctx, t, opPowerStatus, func(ctx context.Context, a *attempt) error {
		var err error
		st, err = a.powerState(ctx)
		return err
	})
	return st, err
}

// powerOp is the operation of a power action; false for an unknown action.
func powerOp(a PowerAction) (op, bool) {
	switch a {
	case ActionOn:
		return opPowerOn, true
	case ActionOff:
		return opPowerOff, true
	case ActionCycle:
		return opPowerCycle, true
	}
	return op{}, false
}

// SetPower applies a power action. ActionOn on a host that is on and
// ActionOff on a host that is off succeed without touching the host.
// ActionOff returns once the BMC reports the host off (at most
// Config.PowerSettleTimeout later). ActionCycle on a host that is off powers
// it on; on a host in an unknown state it powers off, waits for "off" and
// powers on. A cycle is never retried once it may have reached the BMC.
func (m *Manager) SetPower(ctx context.Context, t Target, a PowerAction) error {
	o, ok := powerOp(a)
	if !ok {
		return m.fail(t, nil, op{"power " + string(a), "power_invalid"},
			&cause{kind: ErrUnsupported, msg: fmt.Sprintf("unknown power action %q (want on, off or cycle)", a)})
	}
	return m.do(ctx, t, o, func(ctx context.Context, at *attempt) error {
		st, err := at.powerState(ctx)
		if err != nil {
			return err
		}
		switch {
		case a == ActionOn && st == PowerOn, a == ActionOff && st == PowerOff:
			return nil
		case a == ActionOn, a == ActionCycle && st == PowerOff:
			return at.setPower(ctx, "on")
		case a == ActionOff:
			if err := at.setPower(ctx, "off"); err != nil {
				return err
			}
			return at.waitOff(ctx)
		case st == PowerOn: // cycle
			at.committed = true
			return at.setPower(ctx, "cycle")
		default: // cycle from an unknown state
			if err := at.setPower(ctx, "off"); err != nil {
				return err
			}
			if err := at.waitOff(ctx); err != nil {
				return err
			}
			at.committed = true
			return at.setPower(ctx, "on")
		}
	})
}

// SetNextBoot sets a one-time (not persistent) boot device for the next
// boot, e.g. SetNextBoot(ctx, t, BootPXE, BootUEFI) before a power cycle.
func (m *Manager) SetNextBoot(ctx context.Context, t Target, dev BootDevice, mode BootMode) error {
	switch {
	case dev != BootPXE && dev != BootDisk:
		return m.fail(t, nil, opNextBoot, &cause{kind: ErrUnsupported, msg: fmt.Sprintf("unknown boot device %q (want pxe or disk)", dev)})
	case mode != BootAuto && mode != BootUEFI && mode != BootLegacy:
		return m.fail(t, nil, opNextBoot, &cause{kind: ErrUnsupported, msg: fmt.Sprintf("unknown boot mode %q (want uefi, legacy or empty)", mode)})
	}
	return m.do(ctx, t, opNextBoot, func(ctx context.Context, at *attempt) error {
		efi := mode == BootUEFI
		if mode == BootAuto && at.ep.Driver == DriverRedfish {
			// bmclib always sends BootSourceOverrideMode; keep the BMC's.
			err := at.call(ctx, func(ctx context.Context) error {
				o, err := at.s.GetBootDeviceOverride(ctx)
				efi = o.IsEFIBoot
				return err
			})
			if err != nil {
				if isCanceled(err) {
					return err
				}
				m.log.Debug("bmc: reading boot override mode failed; sending legacy", "target", at.t, "err", err)
				efi = false
			}
		}
		return at.call(ctx, func(ctx context.Context) error {
			ok, err := at.s.SetBootDevice(ctx, string(dev), false, efi)
			if err == nil && !ok {
				err = errors.New("the BMC did not confirm the boot device")
			}
			return err
		})
	})
}

// attempt is one session with one BMC.
type attempt struct {
	m         *Manager
	t         Target
	ep        Endpoint
	s         session
	committed bool // a non-idempotent command may have reached the BMC
}

// attemptErr is a classified failure of one bmclib call.
type attemptErr struct{ f failure }

func (e *attemptErr) Error() string { return e.f.err.Error() }

// call runs one bmclib call under Config.Timeout and classifies its error.
func (a *attempt) call(ctx context.Context, fn func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, a.m.cfg.Timeout)
	defer cancel()
	start := time.Now()
	err := fn(cctx)
	if err == nil {
		return nil
	}
	// A cancelled caller must not be reported as a BMC timeout.
	if ctx.Err() != nil {
		cctx = ctx
	}
	return &attemptErr{classify(err, a.ep.Driver, a.t.Password, time.Since(start), cctx)}
}

func (a *attempt) powerState(ctx context.Context) (PowerState, error) {
	var raw string
	err := a.call(ctx, func(ctx context.Context) error {
		var err error
		raw, err = a.s.GetPowerState(ctx)
		return err
	})
	if err != nil {
		return PowerUnknown, err
	}
	return normalizePower(raw), nil
}

func (a *attempt) setPower(ctx context.Context, state string) error {
	return a.call(ctx, func(ctx context.Context) error {
		ok, err := a.s.SetPowerState(ctx, state)
		if err == nil && !ok {
			err = fmt.Errorf("the BMC did not confirm power %s", state)
		}
		return err
	})
}

// waitOff polls the power state until it reads off, for at most
// Config.PowerSettleTimeout.
func (a *attempt) waitOff(ctx context.Context) error {
	deadline := time.Now().Add(a.m.cfg.PowerSettleTimeout)
	for {
		st, err := a.powerState(ctx)
		if err != nil {
			return err
		}
		if st == PowerOff {
			return nil
		}
		if time.Now().After(deadline) {
			return &attemptErr{failure{err: &cause{kind: ErrTimeout,
				msg: fmt.Sprintf("power still reads %s %v after power off", st, a.m.cfg.PowerSettleTimeout)}}}
		}
		t := time.NewTimer(a.m.cfg.PowerPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return &attemptErr{failure{err: &cause{msg: "waiting for power off", ctxErr: ctx.Err()}}}
		case <-t.C:
		}
	}
}

// normalizePower maps ipmitool's "Chassis Power is on\n" and Redfish's
// "On"/"Off" to PowerOn/PowerOff.
func normalizePower(raw string) PowerState {
	s := strings.ToLower(strings.TrimSpace(raw))
	s = strings.TrimPrefix(s, "chassis power is ")
	switch s {
	case "on":
		return PowerOn
	case "off":
		return PowerOff
	}
	return PowerUnknown
}

// do runs fn in a session with t's BMC, with per-BMC serialisation, the
// global concurrency limit, retries and metrics.
func (m *Manager) do(ctx context.Context, t Target, o op, fn func(context.Context, *attempt) error) error {
	ep, err := ParseURL(t.URL)
	if err != nil {
		m.metrics.observe("", o, "invalid_url", 0)
		return m.fail(t, nil, o, err)
	}
	start := time.Now()
	var last error
	for try := 0; ; try++ {
		committed := false
		last, committed = m.attempt(ctx, t, ep, o, fn)
		if last == nil {
			m.metrics.observe(ep.Driver, o, "success", time.Since(start))
			m.log.Debug("bmc: "+o.text, "target", t, "took", time.Since(start), "attempts", try+1)
			return nil
		}
		var ae *attemptErr
		transient := errors.As(last, &ae) && ae.f.transient
		if !transient || committed || try >= m.cfg.Retries || ctx.Err() != nil {
			break
		}
		wait := m.backoff(try)
		m.metrics.retries.WithLabelValues(string(ep.Driver), o.label).Inc()
		m.log.Warn("bmc: retrying after transient error", "target", t, "op", o.text, "attempt", try+1, "wait", wait, "err", last.Error())
		tm := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			tm.Stop()
		case <-tm.C:
		}
	}
	var c *cause
	var ae *attemptErr
	switch {
	case errors.As(last, &ae):
		c = ae.f.err
	case errors.As(last, &c):
	default:
		c = &cause{msg: scrub(last.Error(), t.Password)}
	}
	if ctx.Err() != nil && c.kind == nil {
		c.ctxErr = ctx.Err()
	}
	e := m.fail(t, &ep, o, c)
	m.metrics.observe(ep.Driver, o, outcome(e), time.Since(start))
	m.log.Warn("bmc: "+o.text+" failed", "target", t, "err", e.Error())
	return e
}

// attempt opens one session (after taking the BMC's lock and a global slot),
// runs fn and closes the session.
func (m *Manager) attempt(ctx context.Context, t Target, ep Endpoint, o op, fn func(context.Context, *attempt) error) (error, bool) {
	release, err := m.acquire(ctx, ep.Addr())
	if err != nil {
		return &cause{msg: "waiting for the BMC", ctxErr: err}, false
	}
	defer release()
	m.metrics.inFlight.Inc()
	defer m.metrics.inFlight.Dec()

	s, err := m.newSess(t, ep)
	if err != nil {
		return err, false
	}
	a := &attempt{m: m, t: t, ep: ep, s: s}
	if err := a.call(ctx, s.Open); err != nil {
		// bmclib closes nothing on a failed Open; closing is harmless.
		m.closeSession(s, t)
		return err, false
	}
	defer m.closeSession(s, t)
	err = fn(ctx, a)
	return err, a.committed
}

// acquire takes the lock of one BMC, then a global slot. The order matters:
// callers queued on a busy BMC must not hold global slots.
func (m *Manager) acquire(ctx context.Context, key string) (func(), error) {
	m.mu.Lock()
	l := m.locks[key]
	if l == nil {
		l = &bmcLock{ch: make(chan struct{}, 1)}
		m.locks[key] = l
	}
	l.refs++
	m.mu.Unlock()
	unref := func() {
		m.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(m.locks, key)
		}
		m.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
	case <-ctx.Done():
		unref()
		return nil, ctx.Err()
	}
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		<-l.ch
		unref()
		return nil, ctx.Err()
	}
	return func() {
		<-m.sem
		<-l.ch
		unref()
	}, nil
}

// backoff returns the wait before retry number try+1.
func (m *Manager) backoff(try int) time.Duration {
	d := m.cfg.Backoff
	for i := 0; i < try && d < m.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, m.cfg.MaxBackoff)
}

// fail builds the *Error returned to callers; err must already be scrubbed.
func (m *Manager) fail(t Target, ep *Endpoint, o op, err error) *Error {
	e := &Error{Host: t.Host, Op: o.text, Err: err}
	if ep != nil {
		e.Driver, e.BMC = ep.Driver, ep.Addr()
	}
	return e
}

func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled)
}

// outcome is the metrics label for an error.
func outcome(err error) string {
	switch {
	case errors.Is(err, ErrAuth):
		return "auth"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrUnsupported):
		return "unsupported"
	case errors.Is(err, ErrRejected):
		return "rejected"
	case errors.Is(err, ErrInvalidURL):
		return "invalid_url"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "error"
}
