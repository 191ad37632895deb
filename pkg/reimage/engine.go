package reimage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Engine runs rollouts. Create it with New, run it with Run, and drive it with
// Start, Revert, Refresh, Pause, Resume, Cancel and BootReported. All
// methods are safe for concurrent use.
type Engine struct {
	cfg Config
	st  State
	pw  Power
	clk Clock
	log *slog.Logger
	met *metrics
	sem *semaphore.Weighted

	persistC chan persistReq
	eventC   chan fleet.Event
	ready    chan struct{}

	mu       sync.Mutex
	started  bool
	stopping bool
	runErr   error
	runCtx   context.Context
	runs     map[string]*run
	busy     map[string]string // host -> rollout id
	waiters  map[string]*waiter
	wg       sync.WaitGroup // rollout runners
}

// run is one active rollout. r and hosts are guarded by Engine.mu.
type run struct {
	r       fleet.Rollout
	hosts   []fleet.RolloutHost
	changed chan struct{} // closed and replaced when r.State changes
	done    chan struct{} // closed when the rollout is finished
	hmu     sync.Mutex    // serializes header writes
}

type waiter struct {
	digest fleet.Digest
	since  time.Time
	ch     chan error // nil error: booted
}

type persistReq struct {
	id    string
	hosts []fleet.RolloutHost
	done  chan error
}

// New returns an engine over st, driving hosts through pw, timing with clk
// (nil: SystemClock), logging to log (nil: discard) and registering its
// kiln_rollout_* metrics on reg (nil: not registered). An invalid cfg returns
// an error naming the field.
func New(cfg Config, st State, pw Power, clk Clock, log *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if st == nil || pw == nil {
		return nil, fmt.Errorf("reimage: %w: state and power are required", fleet.ErrInvalid)
	}
	if clk == nil {
		clk = SystemClock()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("reimage: metrics: %w", err)
	}
	return &Engine{
		cfg: cfg, st: st, pw: pw, clk: clk, log: log, met: met,
		sem:      semaphore.NewWeighted(int64(cfg.MaxInFlight)),
		persistC: make(chan persistReq, 1024),
		eventC:   make(chan fleet.Event, 8192),
		ready:    make(chan struct{}),
		runs:     map[string]*run{},
		busy:     map[string]string{},
		waiters:  map[string]*waiter{},
	}, nil
}

// Run resumes every unfinished rollout found in the store, then runs
// rollouts until ctx is done. On return no rollout goroutine is left; hosts
// in flight stay as persisted and are picked up by the next Run (a host whose
// power cycle was persisted is not cycled again: its boot report is awaited).
// Run may be called once.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return fmt.Errorf("reimage: Run called twice")
	}
	e.started, e.runCtx = true, ctx
	e.mu.Unlock()

	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	bg.Go(func() { e.persister(bgCtx) })
	bg.Go(func() { e.eventer(bgCtx) })

	err := e.resumeAll(ctx)
	if err != nil {
		e.mu.Lock()
		e.runErr = err
		e.mu.Unlock()
	}
	close(e.ready)
	if err == nil {
		<-ctx.Done()
	}
	e.mu.Lock()
	e.stopping = true
	e.mu.Unlock()
	e.wg.Wait()
	stopBg()
	bg.Wait()
	return err
}

func (e *Engine) resumeAll(ctx context.Context) error {
	all, err := e.st.Rollouts(ctx)
	if err != nil {
		return fmt.Errorf("reimage: resume: %w", err)
	}
	for _, h := range all {
		if !h.Finished.IsZero() {
			continue
		}
		r, err := e.st.Rollout(ctx, h.ID)
		if err != nil {
			return fmt.Errorf("reimage: resume %s: %w", h.ID, err)
		}
		hosts, err := e.st.RolloutHosts(ctx, h.ID)
		if err != nil {
			return fmt.Errorf("reimage: resume %s: %w", h.ID, err)
		}
		if r.State == fleet.RolloutPending {
			_ = r.SetState(fleet.RolloutRunning, e.clk.Now())
		}
		e.log.Info("resuming rollout", "rollout", r.ID, "state", r.State, "image", r.Image, "hosts", len(hosts))
		e.launch(&run{r: r, hosts: hosts})
	}
	return nil
}

// launch registers rn and starts its runner. The caller must not hold e.mu.
func (e *Engine) launch(rn *run) bool {
	rn.changed, rn.done = make(chan struct{}), make(chan struct{})
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopping {
		return false
	}
	e.runs[rn.r.ID] = rn
	for _, h := range rn.hosts {
		e.busy[h.Host] = rn.r.ID
	}
	e.met.active.Inc()
	ctx := e.runCtx
	e.wg.Go(func() { e.runRollout(ctx, rn) })
	return true
}

// awaitReady waits for Run to be called and to have resumed the stored
// rollouts (or for ctx to end), so that callers may start before Run does.
func (e *Engine) awaitReady(ctx context.Context) error {
	select {
	case <-e.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.runErr != nil {
		return fmt.Errorf("%w: %w", ErrNotRunning, e.runErr)
	}
	if e.stopping || e.runCtx.Err() != nil {
		return ErrNotRunning
	}
	return nil
}

// Start validates req and starts a reimage rollout; it returns the rollout as
// created (state running). It fails when the image or a host does not exist
// (fleet.ErrNotFound), when req is invalid (fleet.ErrInvalid, naming the
// field) or when a host is in another unfinished rollout (fleet.ErrConflict).
func (e *Engine) Start(ctx context.Context, req Request) (fleet.Rollout, error) {
	if err := e.awaitReady(ctx); err != nil {
		return fleet.Rollout{}, err
	}
	if (len(req.Hosts) == 0) == (req.Selector == "") {
		return fleet.Rollout{}, fmt.Errorf("reimage: %w: give either hosts or a selector", fleet.ErrInvalid)
	}
	hosts := req.Hosts
	if req.Selector != "" {
		sel, err := fleet.ParseSelector(req.Selector)
		if err != nil {
			return fleet.Rollout{}, fmt.Errorf("reimage: selector: %w", err)
		}
		hs, err := e.st.ListHosts(ctx, sel)
		if err != nil {
			return fleet.Rollout{}, fmt.Errorf("reimage: %w", err)
		}
		if len(hs) == 0 {
			return fleet.Rollout{}, fmt.Errorf("reimage: %w: selector %q matches no host", fleet.ErrNotFound, req.Selector)
		}
		hosts = make([]string, len(hs))
		for i, h := range hs {
			hosts[i] = h.Name
		}
	} else {
		seen := map[string]bool{}
		for _, h := range hosts {
			if seen[h] {
				return fleet.Rollout{}, fmt.Errorf("reimage: %w: host %s is named twice", fleet.ErrInvalid, h)
			}
			seen[h] = true
			if _, err := e.st.GetHost(ctx, h); err != nil {
				return fleet.Rollout{}, fmt.Errorf("reimage: host %s: %w", h, err)
			}
		}
	}
	return e.start(ctx, fleet.KindReimage, hosts, req)
}

func (e *Engine) start(ctx context.Context, kind string, hosts []string, req Request) (fleet.Rollout, error) {
	switch {
	case req.Batch < 1:
		return fleet.Rollout{}, fmt.Errorf("reimage: %w: batch %d must be at least 1", fleet.ErrInvalid, req.Batch)
	case req.MaxFailures < 0:
		return fleet.Rollout{}, fmt.Errorf("reimage: %w: max failures %d is negative", fleet.ErrInvalid, req.MaxFailures)
	case req.BootTimeout < 0:
		return fleet.Rollout{}, fmt.Errorf("reimage: %w: boot timeout %s is negative", fleet.ErrInvalid, req.BootTimeout)
	}
	if req.BootTimeout == 0 {
		req.BootTimeout = e.cfg.BootTimeout
	}
	img, err := e.st.Image(ctx, req.Image)
	if err != nil {
		return fleet.Rollout{}, fmt.Errorf("reimage: %w", err)
	}
	// Reserve the hosts so that two concurrent Starts cannot share one.
	const reserving = "(being created)"
	e.mu.Lock()
	for _, h := range hosts {
		if id, ok := e.busy[h]; ok {
			e.mu.Unlock()
			return fleet.Rollout{}, fmt.Errorf("reimage: %w: host %s is in unfinished rollout %s", fleet.ErrConflict, h, id)
		}
	}
	for _, h := range hosts {
		e.busy[h] = reserving
	}
	e.mu.Unlock()
	release := func() {
		e.mu.Lock()
		for _, h := range hosts {
			if e.busy[h] == reserving {
				delete(e.busy, h)
			}
		}
		e.mu.Unlock()
	}

	now := e.clk.Now().UTC()
	r := fleet.Rollout{
		Kind: kind, Image: img.Ref, Digest: img.Rootfs.Digest, Selector: req.Selector,
		Hosts: slices.Clone(hosts), Batch: req.Batch, MaxFailures: req.MaxFailures,
		BootTimeout: req.BootTimeout, AutoRevert: req.AutoRevert, State: fleet.RolloutRunning,
		Actor: req.Actor, Reason: req.Reason, Created: now, Started: now,
	}
	hs := fleet.NewRolloutHosts(&r)
	r.Counts = fleet.CountHosts(hs)
	r, err = e.st.CreateRollout(ctx, r, hs)
	if err != nil {
		release()
		return fleet.Rollout{}, fmt.Errorf("reimage: %w", err)
	}
	e.event(fleet.Event{Kind: "rollout.start", Rollout: r.ID, Actor: r.Actor,
		Message: fmt.Sprintf("%s of %d hosts to %s (batch %d, max failures %d, boot timeout %s, auto-revert %v): %s",
			kind, len(hosts), r.Image, r.Batch, r.MaxFailures, r.BootTimeout, r.AutoRevert, r.Reason)})
	e.log.Info("rollout started", "rollout", r.ID, "kind", kind, "image", r.Image, "hosts", len(hosts), "actor", r.Actor)
	if !e.launch(&run{r: r, hosts: hs}) {
		release()
		return r, ErrNotRunning // stored; the next Run resumes it
	}
	return r, nil
}

// Revert starts a one-host rollout that takes req.Host back to image req.To,
// or, when To is empty, to fleet.PreviousImage of its history (`kiln revert
// HOST --reimage`). A host without a previous image wraps fleet.ErrNotFound.
func (e *Engine) Revert(ctx context.Context, req RevertRequest) (fleet.Rollout, error) {
	host, to := req.Host, req.To
	if err := e.awaitReady(ctx); err != nil {
		return fleet.Rollout{}, err
	}
	h, err := e.st.GetHost(ctx, host)
	if err != nil {
		return fleet.Rollout{}, fmt.Errorf("reimage: revert host %s: %w", host, err)
	}
	if to == "" {
		hist, err := e.st.History(ctx, host)
		if err != nil {
			return fleet.Rollout{}, fmt.Errorf("reimage: revert host %s: %w", host, err)
		}
		var ok bool
		if to, ok = fleet.PreviousImage(hist, h.DesiredImage); !ok {
			return fleet.Rollout{}, fmt.Errorf("reimage: revert host %s: %w: no previous image in its history", host, fleet.ErrNotFound)
		}
	}
	reason := req.Reason
	if reason == "" {
		reason = fmt.Sprintf("revert from %s", h.DesiredImage)
	}
	return e.start(ctx, fleet.KindRevert, []string{host}, Request{Image: to, Batch: 1, Actor: req.Actor,
		BootTimeout: req.BootTimeout, Reason: reason})
}

// Refresh starts a rollout of the selected hosts that are not on
// req.Image@latest yet (desired image and booted digest). When every selected
// host is, it returns an error wrapping ErrNothingToDo and starts nothing.
func (e *Engine) Refresh(ctx context.Context, req RefreshRequest) (fleet.Rollout, error) {
	if err := e.awaitReady(ctx); err != nil {
		return fleet.Rollout{}, err
	}
	ref, err := fleet.ParseRef(req.Image)
	if err != nil || !ref.IsLatest() {
		return fleet.Rollout{}, fmt.Errorf("reimage: refresh: %w: image %q must be an image name without version", fleet.ErrInvalid, req.Image)
	}
	img, err := e.st.Image(ctx, ref.String())
	if err != nil {
		return fleet.Rollout{}, fmt.Errorf("reimage: refresh: %w", err)
	}
	sel, err := fleet.ParseSelector(req.Selector)
	if err != nil {
		return fleet.Rollout{}, fmt.Errorf("reimage: refresh: selector: %w", err)
	}
	all, err := e.st.ListHosts(ctx, sel)
	if err != nil {
		return fleet.Rollout{}, fmt.Errorf("reimage: refresh: %w", err)
	}
	var hosts []string
	for _, h := range all {
		if h.DesiredImage != img.Ref || h.BootedDigest != img.Rootfs.Digest {
			hosts = append(hosts, h.Name)
		}
	}
	if len(hosts) == 0 {
		return fleet.Rollout{}, fmt.Errorf("reimage: refresh: all %d selected hosts are on %s: %w", len(all), img.Ref, ErrNothingToDo)
	}
	return e.start(ctx, fleet.KindRefresh, hosts, Request{Selector: req.Selector, Image: img.Ref,
		Batch: req.Batch, MaxFailures: req.MaxFailures, BootTimeout: req.BootTimeout,
		AutoRevert: req.AutoRevert, Actor: req.Actor, Reason: req.Reason})
}

// Pause stops rollout id from starting hosts; hosts in flight finish. Only a
// running rollout can be paused (else fleet.ErrConflict).
func (e *Engine) Pause(ctx context.Context, id, actor string) (fleet.Rollout, error) {
	return e.control(ctx, id, fleet.RolloutPaused, actor)
}

// Resume lets a paused rollout start hosts again.
func (e *Engine) Resume(ctx context.Context, id, actor string) (fleet.Rollout, error) {
	return e.control(ctx, id, fleet.RolloutRunning, actor)
}

// Cancel ends a running or paused rollout: its pending hosts become
// cancelled, hosts in flight finish their step (a power cycle is never
// interrupted), then the rollout is finished.
func (e *Engine) Cancel(ctx context.Context, id, actor string) (fleet.Rollout, error) {
	return e.control(ctx, id, fleet.RolloutCancelled, actor)
}

func (e *Engine) control(ctx context.Context, id string, to fleet.RolloutState, actor string) (fleet.Rollout, error) {
	if err := e.awaitReady(ctx); err != nil {
		return fleet.Rollout{}, err
	}
	e.mu.Lock()
	rn := e.runs[id]
	e.mu.Unlock()
	if rn == nil {
		r, err := e.st.Rollout(ctx, id)
		if err != nil {
			return fleet.Rollout{}, fmt.Errorf("reimage: %w", err)
		}
		return r, fmt.Errorf("reimage: rollout %s is %s and finished: %w", id, r.State, fleet.ErrConflict)
	}
	var err error
	r, werr := e.writeHeader(ctx, rn, func(r *fleet.Rollout) bool {
		err = r.SetState(to, e.clk.Now().UTC())
		return err == nil
	})
	if err != nil {
		return r, fmt.Errorf("reimage: %w", err)
	}
	e.event(fleet.Event{Kind: "rollout." + map[fleet.RolloutState]string{fleet.RolloutPaused: "pause",
		fleet.RolloutRunning: "resume", fleet.RolloutCancelled: "cancel"}[to], Rollout: id, Actor: actor,
		Message: fmt.Sprintf("rollout %s by %s", to, actor)})
	return r, werr
}

// writeHeader applies fn to the live rollout under the lock (fn returns
// false to change nothing), wakes the runner and stores the header. It
// returns the rollout as changed.
func (e *Engine) writeHeader(ctx context.Context, rn *run, fn func(*fleet.Rollout) bool) (fleet.Rollout, error) {
	rn.hmu.Lock()
	defer rn.hmu.Unlock()
	e.mu.Lock()
	if !fn(&rn.r) {
		r := e.snapshotLocked(rn, false)
		e.mu.Unlock()
		return r, nil
	}
	rn.r.Counts = fleet.CountHosts(rn.hosts)
	close(rn.changed)
	rn.changed = make(chan struct{})
	r := e.snapshotLocked(rn, false)
	e.mu.Unlock()
	if err := e.st.PutRollout(context.WithoutCancel(ctx), r); err != nil {
		return r, fmt.Errorf("reimage: store rollout %s: %w", r.ID, err)
	}
	return r, nil
}

func (e *Engine) snapshotLocked(rn *run, withHosts bool) fleet.Rollout {
	r := rn.r
	r.Counts = fleet.CountHosts(rn.hosts)
	if withHosts {
		r.Hosts = slices.Clone(rn.r.Hosts)
	} else {
		r.Hosts = nil
	}
	return r
}

// loaded waits until Run has loaded the unfinished rollouts (or ctx ends),
// so that reads before that see live state rather than stale headers.
func (e *Engine) loaded(ctx context.Context) error {
	select {
	case <-e.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Get returns rollout id with its Hosts and live Counts. Like every read
// method it first waits for Run to have loaded the stored rollouts.
func (e *Engine) Get(ctx context.Context, id string) (fleet.Rollout, error) {
	if err := e.loaded(ctx); err != nil {
		return fleet.Rollout{}, err
	}
	e.mu.Lock()
	if rn := e.runs[id]; rn != nil {
		r := e.snapshotLocked(rn, true)
		e.mu.Unlock()
		return r, nil
	}
	e.mu.Unlock()
	r, err := e.st.Rollout(ctx, id)
	if err != nil {
		return r, fmt.Errorf("reimage: %w", err)
	}
	return r, nil
}

// Hosts returns the live progress of every host of rollout id, in order.
func (e *Engine) Hosts(ctx context.Context, id string) ([]fleet.RolloutHost, error) {
	if err := e.loaded(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	if rn := e.runs[id]; rn != nil {
		hs := slices.Clone(rn.hosts)
		e.mu.Unlock()
		return hs, nil
	}
	e.mu.Unlock()
	hs, err := e.st.RolloutHosts(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reimage: %w", err)
	}
	return hs, nil
}

// List returns every rollout, oldest first, with live Counts for active ones
// and without Hosts.
func (e *Engine) List(ctx context.Context) ([]fleet.Rollout, error) {
	if err := e.loaded(ctx); err != nil {
		return nil, err
	}
	all, err := e.st.Rollouts(ctx)
	if err != nil {
		return nil, fmt.Errorf("reimage: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, r := range all {
		if rn := e.runs[r.ID]; rn != nil {
			all[i] = e.snapshotLocked(rn, false)
		}
	}
	return all, nil
}

// Wait blocks until rollout id is finished (no host in flight) or ctx is
// done, and returns it. A rollout that is not active returns at once.
func (e *Engine) Wait(ctx context.Context, id string) (fleet.Rollout, error) {
	if err := e.loaded(ctx); err != nil {
		return fleet.Rollout{}, err
	}
	e.mu.Lock()
	rn := e.runs[id]
	e.mu.Unlock()
	if rn != nil {
		select {
		case <-rn.done:
		case <-ctx.Done():
			return fleet.Rollout{}, ctx.Err()
		}
	}
	return e.Get(ctx, id)
}

// BootReported tells the engine about a boot report kilnd recorded (call it
// after the report is stored). It never blocks; reports of hosts the engine
// is not waiting for are ignored.
func (e *Engine) BootReported(r fleet.BootReport) {
	if r.Phase != fleet.PhaseBooted && r.Phase != fleet.PhaseFailed {
		return
	}
	e.mu.Lock()
	w := e.waiters[r.Host]
	e.mu.Unlock()
	if w == nil || !r.Time.IsZero() && r.Time.Before(w.since) {
		return
	}
	var err error
	switch {
	case r.Phase == fleet.PhaseFailed:
		err = fmt.Errorf("%w: host reported: %s", ErrBootFailed, r.Message)
	case r.Digest != "" && r.Digest != w.digest:
		err = fmt.Errorf("%w: host booted %s (%s), want %s", ErrBootFailed, r.Image, r.Digest, w.digest)
	}
	select {
	case w.ch <- err:
	default:
	}
}

// --- running a rollout ---------------------------------------------------

func (e *Engine) runRollout(ctx context.Context, rn *run) {
	defer e.met.active.Dec()
	n := len(rn.hosts)
	for b := 0; b*rn.r.Batch < n; b++ {
		lo, hi := b*rn.r.Batch, min(n, (b+1)*rn.r.Batch)
		var wg sync.WaitGroup
		var pending, resumed []int
		e.mu.Lock()
		for i := lo; i < hi; i++ {
			switch st := rn.hosts[i].State; {
			case st == fleet.HostPending:
				pending = append(pending, i)
			case !st.Settled(rn.r.AutoRevert):
				resumed = append(resumed, i)
			}
		}
		e.mu.Unlock()
		// Hosts in flight before a restart are always finished.
		for _, i := range resumed {
			if err := e.sem.Acquire(ctx, 1); err != nil {
				break
			}
			wg.Go(func() { defer e.sem.Release(1); e.drive(ctx, rn, i, false) })
		}
		for len(pending) > 0 && e.gate(ctx, rn) {
			chunk := pending[:min(len(pending), e.cfg.MaxInFlight)]
			if err := e.sem.Acquire(ctx, int64(len(chunk))); err != nil {
				break
			}
			pending = pending[len(chunk):]
			started, assigned := e.startChunk(ctx, rn, chunk)
			e.sem.Release(int64(len(chunk) - len(started)))
			for _, i := range started {
				wg.Go(func() { defer e.sem.Release(1); e.drive(ctx, rn, i, assigned) })
			}
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		if _, err := e.writeHeader(ctx, rn, func(*fleet.Rollout) bool { return true }); err != nil {
			e.log.Error("storing rollout progress", "rollout", rn.r.ID, "err", err)
		}
		if len(pending) > 0 {
			break // stopped: cancelled or failed
		}
	}
	// A rollout paused during its last batch stays paused until resumed or
	// cancelled.
	e.gate(ctx, rn)
	if ctx.Err() != nil {
		return
	}
	e.finish(ctx, rn)
}

// gate waits while the rollout is paused and reports whether new hosts may
// start (running, ctx not done).
func (e *Engine) gate(ctx context.Context, rn *run) bool {
	for {
		e.mu.Lock()
		st, ch := rn.r.State, rn.changed
		e.mu.Unlock()
		switch st {
		case fleet.RolloutRunning:
			return ctx.Err() == nil
		case fleet.RolloutPaused:
			select {
			case <-ch:
			case <-ctx.Done():
				return false
			}
		default:
			return false
		}
	}
}

func (e *Engine) finish(ctx context.Context, rn *run) {
	now := e.clk.Now().UTC()
	e.mu.Lock()
	var left []fleet.RolloutHost
	to := fleet.HostSkipped
	if rn.r.State == fleet.RolloutCancelled {
		to = fleet.HostCancelled
	}
	for i := range rn.hosts {
		if rn.hosts[i].State == fleet.HostPending {
			_ = rn.hosts[i].SetState(to, now, rn.r.AutoRevert)
			left = append(left, rn.hosts[i])
		}
	}
	e.mu.Unlock()
	if err := e.persist(ctx, rn.r.ID, left); err != nil {
		e.log.Error("storing unstarted hosts", "rollout", rn.r.ID, "err", err)
	}
	r, err := e.writeHeader(ctx, rn, func(r *fleet.Rollout) bool {
		if r.State == fleet.RolloutRunning {
			_ = r.SetState(fleet.RolloutSucceeded, now)
		}
		r.Finished = now
		return true
	})
	if err != nil {
		e.log.Error("storing finished rollout", "rollout", rn.r.ID, "err", err)
	}
	e.mu.Lock()
	delete(e.runs, rn.r.ID)
	for _, h := range rn.hosts {
		if e.busy[h.Host] == rn.r.ID {
			delete(e.busy, h.Host)
		}
	}
	e.mu.Unlock()
	c := r.Counts
	e.met.finished.WithLabelValues(string(r.State)).Inc()
	e.event(fleet.Event{Kind: "rollout.finish", Rollout: r.ID, Actor: r.Actor,
		Message: fmt.Sprintf("rollout %s: %d booted, %d failed (%d reverted, %d revert failed), %d skipped, %d cancelled%s",
			r.State, c.Booted, c.Failed, c.Reverted, c.RevertFailed, c.Skipped, c.Cancelled, suffix(r.Error))})
	e.log.Info("rollout finished", "rollout", r.ID, "state", r.State, "booted", c.Booted, "failed", c.Failed)
	close(rn.done)
}

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// startChunk starts pending hosts: it records each one's current image as
// From, persists them all as assigning, and assigns the image to all of them
// in one transaction. It returns the hosts whose workers should continue,
// and whether the assignment was done for them.
func (e *Engine) startChunk(ctx context.Context, rn *run, idx []int) (started []int, assigned bool) {
	now := e.clk.Now().UTC()
	var names []string
	var recs []fleet.RolloutHost
	for _, i := range idx {
		e.mu.Lock()
		h := rn.hosts[i]
		e.mu.Unlock()
		host, err := e.st.GetHost(ctx, h.Host)
		if err != nil {
			if ctx.Err() != nil {
				return nil, false
			}
			if errors.Is(err, fleet.ErrNotFound) {
				h.Error = "host no longer exists"
				_ = h.SetState(fleet.HostSkipped, now, rn.r.AutoRevert)
				recs = append(recs, h)
				continue
			}
			e.log.Warn("reading host before reimage; it will not auto-revert", "host", h.Host, "err", err)
			h.From = ""
		} else {
			h.From = host.DesiredImage
		}
		if err := h.SetState(fleet.HostAssigning, now, rn.r.AutoRevert); err != nil {
			e.log.Error("starting host", "rollout", rn.r.ID, "host", h.Host, "err", err)
			continue
		}
		recs = append(recs, h)
		names = append(names, h.Host)
		started = append(started, i)
	}
	if err := e.persist(ctx, rn.r.ID, recs); err != nil {
		e.log.Error("storing started hosts", "rollout", rn.r.ID, "err", err)
		return nil, false
	}
	e.mu.Lock()
	for _, h := range recs {
		rn.hosts[h.Index] = h
	}
	e.mu.Unlock()
	for _, h := range recs {
		e.hostEvent(rn, h, "")
	}
	if len(names) == 0 {
		return nil, false
	}
	if err := e.st.Assign(ctx, names, rn.r.Image, rn.r.Actor, e.reason(rn)); err != nil {
		if ctx.Err() != nil {
			return started, false // workers see ctx done and leave the hosts as persisted
		}
		// One bad host must not fail its batch: each worker assigns alone.
		e.log.Warn("batch assign failed; assigning hosts one by one", "rollout", rn.r.ID, "err", err)
		return started, false
	}
	return started, true
}

func (e *Engine) reason(rn *run) string {
	if rn.r.Reason != "" {
		return fmt.Sprintf("rollout %s: %s", rn.r.ID, rn.r.Reason)
	}
	return "rollout " + rn.r.ID
}

// drive takes host i from its persisted state to a settled one. assigned
// tells that the batch assignment was done for it. On ctx done it returns
// leaving the host as persisted, for the next Run.
func (e *Engine) drive(ctx context.Context, rn *run, i int, assigned bool) {
	e.mu.Lock()
	autoRevert := rn.r.AutoRevert
	e.mu.Unlock()
	e.met.inFlight.Inc()
	defer e.met.inFlight.Dec()
	err := e.forward(ctx, rn, i, assigned)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		e.fail(ctx, rn, i, fleet.HostFailed, err)
	}
	e.mu.Lock()
	st := rn.hosts[i].State
	e.mu.Unlock()
	if autoRevert && (st == fleet.HostFailed || st == fleet.HostReverting) {
		if err := e.revert(ctx, rn, i); err != nil && ctx.Err() == nil {
			e.fail(ctx, rn, i, fleet.HostRevertFailed, err)
		}
	}
}

// forward runs the forward path from the host's persisted state. A nil
// error with the host not booted means there was nothing to do.
func (e *Engine) forward(ctx context.Context, rn *run, i int, assigned bool) error {
	e.mu.Lock()
	h := rn.hosts[i]
	r := rn.r
	e.mu.Unlock()
	switch h.State {
	case fleet.HostAssigning:
		if !assigned {
			if err := e.st.Assign(ctx, []string{h.Host}, r.Image, r.Actor, e.reason(rn)); err != nil {
				return fmt.Errorf("assign %s: %w", r.Image, err)
			}
		}
		if err := e.call(ctx, "set_next_boot", h.Host, e.pw.SetNextBootNetwork); err != nil {
			return err
		}
		if _, err := e.transition(ctx, rn, i, fleet.HostBootSet, nil); err != nil {
			return err
		}
		fallthrough
	case fleet.HostBootSet:
		now := e.clk.Now().UTC()
		w := e.addWaiter(h.Host, r.Digest, now)
		defer e.dropWaiter(h.Host, w)
		if _, err := e.transition(ctx, rn, i, fleet.HostCycling, func(h *fleet.RolloutHost) {
			h.CycledAt = now
			h.Attempts++
		}); err != nil {
			return err
		}
		if err := e.call(ctx, "power_cycle", h.Host, e.pw.PowerCycle); err != nil {
			return err
		}
		if _, err := e.transition(ctx, rn, i, fleet.HostWaiting, nil); err != nil {
			return err
		}
		return e.awaitBoot(ctx, rn, i, w, now)
	case fleet.HostCycling, fleet.HostWaiting:
		w := e.addWaiter(h.Host, r.Digest, h.CycledAt)
		defer e.dropWaiter(h.Host, w)
		return e.awaitBoot(ctx, rn, i, w, h.CycledAt)
	}
	return nil
}

// awaitBoot waits for the booted report of the boot started at since and
// moves the host to booted.
func (e *Engine) awaitBoot(ctx context.Context, rn *run, i int, w *waiter, since time.Time) error {
	e.mu.Lock()
	timeout := rn.r.BootTimeout
	e.mu.Unlock()
	if err := e.waitBoot(ctx, w, i, rn, since.Add(timeout), timeout); err != nil {
		return err
	}
	h, err := e.transition(ctx, rn, i, fleet.HostBooted, nil)
	if err == nil && !h.Started.IsZero() {
		e.met.hostSeconds.Observe(h.Finished.Sub(h.Started).Seconds())
	}
	return err
}

// waitBoot returns nil when the host booted w.digest after w.since, an error
// when it failed or the deadline passed. It first checks the store, so a
// report that came while kilnd was down is not missed.
func (e *Engine) waitBoot(ctx context.Context, w *waiter, i int, rn *run, deadline time.Time, timeout time.Duration) error {
	e.mu.Lock()
	name := rn.hosts[i].Host
	e.mu.Unlock()
	if host, err := e.st.GetHost(ctx, name); err == nil {
		if host.BootedDigest == w.digest && !host.BootedAt.Before(w.since) {
			return nil
		}
		if lr := host.LastReport; lr != nil && lr.Phase == fleet.PhaseFailed && !lr.Time.Before(w.since) {
			return fmt.Errorf("%w: host reported: %s", ErrBootFailed, lr.Message)
		}
	}
	t := e.clk.NewTimer(deadline.Sub(e.clk.Now()))
	defer t.Stop()
	select {
	case err := <-w.ch:
		return err
	case <-t.C():
		return fmt.Errorf("%w: no booted report within %s", ErrBootTimeout, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Engine) addWaiter(host string, d fleet.Digest, since time.Time) *waiter {
	w := &waiter{digest: d, since: since, ch: make(chan error, 1)}
	e.mu.Lock()
	e.waiters[host] = w
	e.mu.Unlock()
	return w
}

func (e *Engine) dropWaiter(host string, w *waiter) {
	e.mu.Lock()
	if e.waiters[host] == w {
		delete(e.waiters, host)
	}
	e.mu.Unlock()
}

// revert takes a failed host back to its From image: assign, next boot,
// power cycle (persisted first, as RevertCycledAt), wait.
func (e *Engine) revert(ctx context.Context, rn *run, i int) error {
	e.mu.Lock()
	h := rn.hosts[i]
	r := rn.r
	e.mu.Unlock()
	if h.From == "" {
		return errors.New("no previous image to revert to")
	}
	if h.State == fleet.HostFailed {
		var err error
		if h, err = e.transition(ctx, rn, i, fleet.HostReverting, nil); err != nil {
			return err
		}
	}
	img, err := e.st.Image(ctx, h.From)
	if err != nil {
		return fmt.Errorf("revert: %w", err)
	}
	since := h.RevertCycledAt
	var w *waiter
	if since.IsZero() {
		if err := e.st.Assign(ctx, []string{h.Host}, h.From, r.Actor, "auto-revert: "+e.reason(rn)); err != nil {
			return fmt.Errorf("revert: assign %s: %w", h.From, err)
		}
		if err := e.call(ctx, "set_next_boot", h.Host, e.pw.SetNextBootNetwork); err != nil {
			return fmt.Errorf("revert: %w", err)
		}
		since = e.clk.Now().UTC()
		w = e.addWaiter(h.Host, img.Rootfs.Digest, since)
		defer e.dropWaiter(h.Host, w)
		if _, err := e.update(ctx, rn, i, func(h *fleet.RolloutHost) error {
			h.RevertCycledAt = since
			h.Attempts++
			return nil
		}); err != nil {
			return err
		}
		if err := e.call(ctx, "power_cycle", h.Host, e.pw.PowerCycle); err != nil {
			return fmt.Errorf("revert: %w", err)
		}
	} else {
		w = e.addWaiter(h.Host, img.Rootfs.Digest, since)
		defer e.dropWaiter(h.Host, w)
	}
	if err := e.waitBoot(ctx, w, i, rn, since.Add(r.BootTimeout), r.BootTimeout); err != nil {
		return fmt.Errorf("revert: %w", err)
	}
	_, err = e.transition(ctx, rn, i, fleet.HostReverted, nil)
	return err
}

// fail records err on host i and moves it to state to (failed or
// revert_failed), then applies the failure budget.
func (e *Engine) fail(ctx context.Context, rn *run, i int, to fleet.HostState, cause error) {
	e.mu.Lock()
	cur := rn.hosts[i].State
	e.mu.Unlock()
	if cur == fleet.HostFailed && to == fleet.HostFailed {
		return
	}
	if to == fleet.HostRevertFailed && cur != fleet.HostFailed && cur != fleet.HostReverting {
		return
	}
	_, err := e.transition(ctx, rn, i, to, func(h *fleet.RolloutHost) {
		if h.Error != "" && to == fleet.HostRevertFailed {
			h.Error += "; " + cause.Error()
		} else {
			h.Error = cause.Error()
		}
	})
	if err != nil {
		e.log.Error("recording host failure", "rollout", rn.r.ID, "err", err)
	}
	if to != fleet.HostFailed {
		return
	}
	var failed, max int
	_, err = e.writeHeader(ctx, rn, func(r *fleet.Rollout) bool {
		failed, max = fleet.CountHosts(rn.hosts).Failed, r.MaxFailures
		if failed <= max || r.State.Done() {
			return false
		}
		r.Error = fmt.Sprintf("%d hosts failed, more than the %d allowed", failed, max)
		return r.SetState(fleet.RolloutFailed, e.clk.Now().UTC()) == nil
	})
	if err != nil {
		e.log.Error("storing failed rollout", "rollout", rn.r.ID, "err", err)
	}
}

// transition moves host i to state to (mutate, if not nil, changes more
// fields), persists it, then publishes it. It returns the host as stored.
func (e *Engine) transition(ctx context.Context, rn *run, i int, to fleet.HostState, mutate func(*fleet.RolloutHost)) (fleet.RolloutHost, error) {
	return e.update(ctx, rn, i, func(h *fleet.RolloutHost) error {
		if err := h.SetState(to, e.clk.Now().UTC(), rn.r.AutoRevert); err != nil {
			return err
		}
		if mutate != nil {
			mutate(h)
		}
		return nil
	})
}

func (e *Engine) update(ctx context.Context, rn *run, i int, fn func(*fleet.RolloutHost) error) (fleet.RolloutHost, error) {
	e.mu.Lock()
	h := rn.hosts[i]
	e.mu.Unlock()
	prev := h.State
	if err := fn(&h); err != nil {
		return h, err
	}
	if err := e.persist(ctx, rn.r.ID, []fleet.RolloutHost{h}); err != nil {
		return h, fmt.Errorf("store host progress: %w", err)
	}
	e.mu.Lock()
	rn.hosts[i] = h
	e.mu.Unlock()
	if h.State != prev {
		e.hostEvent(rn, h, prev)
	}
	return h, nil
}

func (e *Engine) hostEvent(rn *run, h fleet.RolloutHost, prev fleet.HostState) {
	e.met.transitions.WithLabelValues(string(h.State)).Inc()
	msg := string(h.State)
	switch h.State {
	case fleet.HostAssigning:
		msg = fmt.Sprintf("assigning %s (was %q)", rn.r.Image, h.From)
	case fleet.HostFailed, fleet.HostRevertFailed, fleet.HostSkipped:
		msg += ": " + h.Error
	case fleet.HostReverting:
		msg = "reverting to " + h.From
	}
	e.event(fleet.Event{Kind: "rollout.host", Rollout: rn.r.ID, Host: h.Host, Actor: rn.r.Actor, Message: msg})
	e.log.Debug("rollout host", "rollout", rn.r.ID, "host", h.Host, "from", prev, "to", h.State, "err", h.Error)
}

// call runs a Power call bounded by Config.CallTimeout on the engine's clock.
func (e *Engine) call(ctx context.Context, op, host string, fn func(context.Context, string) error) error {
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := e.clk.NewTimer(e.cfg.CallTimeout)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-t.C():
			cancel(ErrBMCTimeout)
		case <-stop:
		}
	})
	start := e.clk.Now()
	err := fn(cctx, host)
	close(stop)
	t.Stop()
	wg.Wait()
	e.met.bmcSeconds.WithLabelValues(op).Observe(e.clk.Now().Sub(start).Seconds())
	if err == nil {
		return nil
	}
	e.met.bmcErrors.WithLabelValues(op).Inc()
	if errors.Is(context.Cause(cctx), ErrBMCTimeout) && ctx.Err() == nil {
		return fmt.Errorf("%s: %w after %s", op, ErrBMCTimeout, e.cfg.CallTimeout)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// --- persistence and events ----------------------------------------------

// persist stores host records durably through the group-commit writer.
func (e *Engine) persist(ctx context.Context, id string, hosts []fleet.RolloutHost) error {
	if len(hosts) == 0 {
		return nil
	}
	req := persistReq{id: id, hosts: hosts, done: make(chan error, 1)}
	select {
	case e.persistC <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-req.done // the writer answers every request it took
}

// persister writes host updates: whatever queued while the previous write
// ran goes in the next one (group commit), one UpdateRolloutHosts call per
// rollout.
func (e *Engine) persister(ctx context.Context) {
	for {
		var first persistReq
		select {
		case first = <-e.persistC:
		case <-ctx.Done():
			return
		}
		batch := []persistReq{first}
	drain:
		for len(batch) < 4096 {
			select {
			case r := <-e.persistC:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		byID := map[string][]fleet.RolloutHost{}
		var order []string
		for _, r := range batch {
			if _, ok := byID[r.id]; !ok {
				order = append(order, r.id)
			}
			byID[r.id] = append(byID[r.id], r.hosts...)
		}
		errs := map[string]error{}
		for _, id := range order {
			errs[id] = e.st.UpdateRolloutHosts(ctx, id, byID[id])
		}
		for _, r := range batch {
			r.done <- errs[r.id]
		}
	}
}

// event queues an event for the log; it blocks only when the log is far
// behind.
func (e *Engine) event(ev fleet.Event) {
	ev.Time = e.clk.Now().UTC()
	e.eventC <- ev
}

// eventer appends queued events; on stop it drains the queue first.
func (e *Engine) eventer(ctx context.Context) {
	for {
		var first fleet.Event
		select {
		case first = <-e.eventC:
		case <-ctx.Done():
			for {
				select {
				case ev := <-e.eventC:
					e.appendEvents(context.WithoutCancel(ctx), []fleet.Event{ev})
				default:
					return
				}
			}
		}
		batch := []fleet.Event{first}
	drain:
		for len(batch) < 4096 {
			select {
			case ev := <-e.eventC:
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		e.appendEvents(context.WithoutCancel(ctx), batch)
	}
}

func (e *Engine) appendEvents(ctx context.Context, evs []fleet.Event) {
	if b, ok := e.st.(EventBatcher); ok {
		if err := b.AppendEvents(ctx, evs); err != nil {
			e.log.Error("appending events", "n", len(evs), "err", err)
		}
		return
	}
	// Events of one host stay in order and rollout-level events (no host)
	// stay between what came before and after them; hosts go in parallel so
	// that a store grouping concurrent writers (bbolt Batch) commits them
	// together.
	for len(evs) > 0 {
		n := slices.IndexFunc(evs, func(ev fleet.Event) bool { return ev.Host == "" })
		switch n {
		case -1:
			e.appendParallel(ctx, evs)
			return
		case 0:
			if err := e.st.AppendEvent(ctx, evs[0]); err != nil {
				e.log.Error("appending event", "kind", evs[0].Kind, "err", err)
			}
			evs = evs[1:]
		default:
			e.appendParallel(ctx, evs[:n])
			evs = evs[n:]
		}
	}
}

func (e *Engine) appendParallel(ctx context.Context, evs []fleet.Event) {
	byHost := map[string][]fleet.Event{}
	var keys []string
	for _, ev := range evs {
		if _, ok := byHost[ev.Host]; !ok {
			keys = append(keys, ev.Host)
		}
		byHost[ev.Host] = append(byHost[ev.Host], ev)
	}
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for _, ev := range byHost[k] {
				if err := e.st.AppendEvent(ctx, ev); err != nil {
					e.log.Error("appending event", "kind", ev.Kind, "host", ev.Host, "err", err)
				}
			}
		})
	}
	wg.Wait()
}
