package reimagetest

import (
	"context"
	"sync"
	"time"

	"github.com/immutableinfra/kiln/pkg/reimage"
)

// Behavior is a host's failure switches in the fake Power.
type Behavior struct {
	// SetBootErr and CycleErr are returned by the calls.
	SetBootErr, CycleErr error
	// HangSetBoot and HangCycle make the call block until its ctx is done.
	HangSetBoot, HangCycle bool
	// CycleDelay makes PowerCycle take this long on Power.Clock (a slow
	// power-on); the call returns early with ctx's error when ctx ends.
	CycleDelay time.Duration
	// SetBootDelay makes SetNextBootNetwork take this long on Power.Clock.
	SetBootDelay time.Duration
}

// Call is one recorded Power call.
type Call struct {
	Op   string // "set_next_boot", "power_cycle" or a Mark
	Host string
	Err  error
}

// Power is a fake BMC layer. After a successful PowerCycle it calls OnCycle
// (if set), which simulates the host booting and reporting (or not). Safe
// for concurrent use.
type Power struct {
	// Clock times CycleDelay and SetBootDelay; nil means real time.
	Clock reimage.Clock
	// OnCycle is called, in the PowerCycle caller's goroutine, after each
	// successful cycle, with the number of cycles of that host so far.
	OnCycle func(host string, cycle int)
	// Default applies to hosts without their own Behavior.
	Default Behavior

	mu       sync.Mutex
	behavior map[string]Behavior
	calls    []Call
	cycles   map[string]int
	inCall   map[string]int
}

var _ reimage.Power = (*Power)(nil)

// Set sets a host's failure switches.
func (p *Power) Set(host string, b Behavior) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.behavior == nil {
		p.behavior = map[string]Behavior{}
	}
	p.behavior[host] = b
}

func (p *Power) begin(op, host string) (Behavior, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inCall == nil {
		p.inCall = map[string]int{}
	}
	p.inCall[host]++
	p.calls = append(p.calls, Call{Op: op, Host: host})
	if b, ok := p.behavior[host]; ok {
		return b, len(p.calls) - 1
	}
	return p.Default, len(p.calls) - 1
}

func (p *Power) end(op, host string, n int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inCall[host]--
	p.calls[n].Err = err
	if op == "power_cycle" && err == nil {
		if p.cycles == nil {
			p.cycles = map[string]int{}
		}
		p.cycles[host]++
	}
}

func (p *Power) wait(ctx context.Context, hang bool, d time.Duration) error {
	switch {
	case hang:
		<-ctx.Done()
		return ctx.Err()
	case d > 0:
		var c <-chan time.Time
		if p.Clock != nil {
			t := p.Clock.NewTimer(d)
			defer t.Stop()
			c = t.C()
		} else {
			t := time.NewTimer(d)
			defer t.Stop()
			c = t.C
		}
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// SetNextBootNetwork implements reimage.Power.
func (p *Power) SetNextBootNetwork(ctx context.Context, host string) error {
	b, n := p.begin("set_next_boot", host)
	err := p.wait(ctx, b.HangSetBoot, b.SetBootDelay)
	if err == nil {
		err = b.SetBootErr
	}
	p.end("set_next_boot", host, n, err)
	return err
}

// PowerCycle implements reimage.Power.
func (p *Power) PowerCycle(ctx context.Context, host string) error {
	b, n := p.begin("power_cycle", host)
	err := p.wait(ctx, b.HangCycle, b.CycleDelay)
	if err == nil {
		err = b.CycleErr
	}
	p.end("power_cycle", host, n, err)
	if err == nil && p.OnCycle != nil {
		p.OnCycle(host, p.Cycles(host))
	}
	return err
}

// InCall returns the number of calls for host that have begun and not
// returned (for tests that must wait until a call hangs).
func (p *Power) InCall(host string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inCall[host]
}

// Cycles returns the number of successful power cycles of host.
func (p *Power) Cycles(host string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cycles[host]
}

// Calls returns every call made so far (with marks), in the order they began.
func (p *Power) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Call(nil), p.calls...)
}

// Mark records a marker in the call log (e.g. "resume"), so a test can check
// which calls came before or after it.
func (p *Power) Mark(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, Call{Op: name})
}
