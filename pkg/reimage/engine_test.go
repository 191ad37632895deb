package reimage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/reimage"
	"github.com/immutableinfra/kiln/pkg/reimage/reimagetest"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func digest(n int) fleet.Digest { return fleet.Digest(fmt.Sprintf("sha256:%064x", n)) }

// Boot behaviours of simulated hosts after a power cycle.
const (
	bootOK     = ""       // reports booted with the image it was assigned
	bootFail   = "fail"   // reports failed when booting the new image, boots others
	bootSilent = "silent" // never reports
	bootBroken = "broken" // reports failed for every image
)

// env is one engine over fake state, power and clock. Hosts h00..hNN start
// on old@1 (booted); new@2 is the image rolled out.
type env struct {
	t   *testing.T
	clk *reimagetest.Clock
	st  *reimagetest.State
	pw  *reimagetest.Power
	cfg reimage.Config

	mu   sync.Mutex
	boot map[string]string
	// barrier, when > 0, holds boot reports until that many hosts have
	// cycled, then releases them together (sizes are consumed in order).
	barrier []int
	held    []fleet.BootReport

	eng    *reimage.Engine
	cancel context.CancelFunc
	done   chan error
}

func newEnv(t *testing.T, n int) *env {
	t.Helper()
	e := &env{t: t, clk: reimagetest.NewClock(t0), st: reimagetest.NewState(), boot: map[string]string{},
		cfg: reimage.Config{CallTimeout: time.Minute, BootTimeout: 10 * time.Minute}}
	e.st.Now = e.clk.Now
	e.pw = &reimagetest.Power{Clock: e.clk, OnCycle: e.onCycle}
	e.st.AddImage(fleet.Image{Name: "old", Version: "1", Rootfs: fleet.Artifact{Digest: digest(1)}, Created: t0.Add(-2 * time.Hour)})
	e.st.AddImage(fleet.Image{Name: "new", Version: "2", Rootfs: fleet.Artifact{Digest: digest(2)}, Created: t0.Add(-time.Hour)})
	for i := range n {
		e.st.PutHost(fleet.Host{Name: host(i), Labels: map[string]string{"rack": "r1"}, DesiredImage: "old@1",
			BootedImage: "old@1", BootedDigest: digest(1), BootedAt: t0.Add(-time.Hour)})
	}
	return e
}

func host(i int) string { return fmt.Sprintf("h%02d", i) }

func hostsN(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = host(i)
	}
	return out
}

// onCycle simulates the host netbooting its desired image and reporting.
func (e *env) onCycle(name string, _ int) {
	h, err := e.st.GetHost(context.Background(), name)
	if err != nil {
		return
	}
	im, err := e.st.Image(context.Background(), h.DesiredImage)
	if err != nil {
		return
	}
	e.mu.Lock()
	mode := e.boot[name]
	e.mu.Unlock()
	r := fleet.BootReport{Time: e.clk.Now(), Host: name, Image: im.Ref, Phase: fleet.PhaseBooted, Digest: im.Rootfs.Digest}
	switch {
	case mode == bootSilent:
		return
	case mode == bootBroken, mode == bootFail && im.Ref == "new@2":
		r.Phase, r.Message = fleet.PhaseFailed, "squashfs digest mismatch"
	}
	e.mu.Lock()
	if len(e.barrier) > 0 {
		e.held = append(e.held, r)
		if len(e.held) < e.barrier[0] {
			e.mu.Unlock()
			return
		}
		e.barrier = e.barrier[1:]
		rs := e.held
		e.held = nil
		e.mu.Unlock()
		e.pw.Mark("release")
		for _, r := range rs {
			e.report(r)
		}
		return
	}
	e.mu.Unlock()
	e.report(r)
}

func (e *env) report(r fleet.BootReport) {
	e.st.Report(r)
	e.pw.Mark(r.Phase + ":" + r.Host)
	e.mu.Lock()
	eng := e.eng
	e.mu.Unlock()
	if eng != nil {
		eng.BootReported(r)
	}
}

func (e *env) setBoot(h, mode string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.boot[h] = mode
}

func (e *env) start() *reimage.Engine {
	e.t.Helper()
	eng, err := reimage.New(e.cfg, e.st, e.pw, e.clk, nil, prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.mu.Lock()
	e.eng, e.cancel, e.done = eng, cancel, make(chan error, 1)
	e.mu.Unlock()
	go func() { e.done <- eng.Run(ctx) }()
	e.t.Cleanup(e.stop)
	return eng
}

// stop ends the engine's Run and waits for it (a clean kilnd shutdown).
func (e *env) stop() {
	e.mu.Lock()
	cancel, done := e.cancel, e.done
	e.cancel = nil
	e.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	if err := <-done; err != nil {
		e.t.Errorf("Run: %v", err)
	}
}

func (e *env) wait(id string) fleet.Rollout {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := e.eng.Wait(ctx, id)
	if err != nil {
		e.t.Fatalf("Wait(%s): %v", id, err)
	}
	return r
}

func (e *env) hosts(id string) []fleet.RolloutHost {
	e.t.Helper()
	hs, err := e.eng.Hosts(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return hs
}

// eventually polls cond until it holds; it fails the test after 20s of real
// time (a hang, not a speed assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func states(hs []fleet.RolloutHost) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = string(h.State)
	}
	return strings.Join(s, " ")
}

func TestBatches(t *testing.T) {
	tests := []struct {
		name     string
		n, batch int
	}{
		{"one at a time", 4, 1},
		{"uneven last batch", 10, 3},
		{"exact batches", 8, 4},
		{"batch larger than hosts", 3, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.n)
			for k := 0; k*tt.batch < tt.n; k++ {
				e.barrier = append(e.barrier, min(tt.batch, tt.n-k*tt.batch))
			}
			eng := e.start()
			r, err := eng.Start(context.Background(), reimage.Request{Hosts: hostsN(tt.n), Image: "new@2",
				Batch: tt.batch, Actor: "alice", Reason: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Image != "new@2" || r.Digest != digest(2) || r.State != fleet.RolloutRunning {
				t.Fatalf("Start = %+v", r)
			}
			r = e.wait(r.ID)
			if r.State != fleet.RolloutSucceeded || r.Counts.Booted != tt.n || r.Finished.IsZero() {
				t.Fatalf("rollout = %s %+v", r.State, r.Counts)
			}
			// Replay the call log: a host starts at set_next_boot and ends at
			// its booted report; batch k+1 may start only once batch k ended.
			inFlight, maxInFlight, released := map[string]bool{}, 0, 0
			for _, c := range e.pw.Calls() {
				switch {
				case c.Op == "set_next_boot":
					var i int
					fmt.Sscanf(c.Host, "h%d", &i)
					if i/tt.batch != released {
						t.Fatalf("%s (batch %d) started while batch %d was running", c.Host, i/tt.batch, released)
					}
					inFlight[c.Host] = true
					maxInFlight = max(maxInFlight, len(inFlight))
				case c.Op == "release":
					released++
				case strings.HasPrefix(c.Op, "booted:"):
					delete(inFlight, strings.TrimPrefix(c.Op, "booted:"))
				}
			}
			if want := min(tt.batch, tt.n); maxInFlight != want {
				t.Errorf("max hosts in flight = %d, want %d", maxInFlight, want)
			}
			for i := range tt.n {
				if c := e.pw.Cycles(host(i)); c != 1 {
					t.Errorf("%s cycled %d times", host(i), c)
				}
				h, _ := e.st.GetHost(context.Background(), host(i))
				if h.DesiredImage != "new@2" {
					t.Errorf("%s desired %s", host(i), h.DesiredImage)
				}
			}
		})
	}
}

func TestFailureBudget(t *testing.T) {
	bmcErr := errors.New("ipmi: connection refused")
	tests := []struct {
		name        string
		maxFailures int
		bmcFail     map[int]bool // power cycle error
		bootFail    map[int]bool // failed report
		want        fleet.RolloutState
		wantStates  string
		wantErr     map[int]error
	}{
		{"no failure", 0, nil, nil, fleet.RolloutSucceeded,
			"booted booted booted booted booted booted", nil},
		{"within budget", 2, map[int]bool{0: true}, map[int]bool{3: true}, fleet.RolloutSucceeded,
			"failed booted booted failed booted booted", map[int]error{0: bmcErr, 3: reimage.ErrBootFailed}},
		{"one past budget stops after the batch", 1, map[int]bool{0: true}, map[int]bool{2: true}, fleet.RolloutFailed,
			"failed booted failed booted skipped skipped", map[int]error{0: bmcErr, 2: reimage.ErrBootFailed}},
		{"zero budget, in-flight host finishes", 0, nil, map[int]bool{0: true}, fleet.RolloutFailed,
			"failed booted skipped skipped skipped skipped", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 6)
			for i := range tt.bmcFail {
				e.pw.Set(host(i), reimagetest.Behavior{CycleErr: bmcErr})
			}
			for i := range tt.bootFail {
				e.setBoot(host(i), bootFail)
			}
			eng := e.start()
			r, err := eng.Start(context.Background(), reimage.Request{Selector: "rack=r1", Image: "new",
				Batch: 2, MaxFailures: tt.maxFailures, Actor: "ci"})
			if err != nil {
				t.Fatal(err)
			}
			r = e.wait(r.ID)
			hs := e.hosts(r.ID)
			if r.State != tt.want || states(hs) != tt.wantStates {
				t.Fatalf("rollout %s, hosts %q; want %s, %q", r.State, states(hs), tt.want, tt.wantStates)
			}
			for i, want := range tt.wantErr {
				if !strings.Contains(hs[i].Error, strings.TrimPrefix(want.Error(), "ipmi: ")) {
					t.Errorf("%s error %q, want %v", host(i), hs[i].Error, want)
				}
			}
			for i, h := range hs {
				if h.State == fleet.HostSkipped && (e.pw.Cycles(host(i)) != 0 || h.Attempts != 0) {
					t.Errorf("skipped %s was power-cycled", host(i))
				}
			}
			if r.State == fleet.RolloutFailed && !strings.Contains(r.Error, "more than") {
				t.Errorf("rollout error %q", r.Error)
			}
			// Every transition is in the event log (flushed by stopping).
			e.stop()
			evs := e.st.Events()
			if len(evs) == 0 || evs[0].Kind != "rollout.start" || evs[len(evs)-1].Kind != "rollout.finish" {
				t.Fatalf("events: first %+v", evs)
			}
			n := 0
			for _, ev := range evs {
				if ev.Kind == "rollout.host" && ev.Host == host(1) {
					n++
				}
			}
			if n != 5 { // assigning boot_set cycling waiting booted
				t.Errorf("%d events for %s, want 5", n, host(1))
			}
		})
	}
}

func TestPauseResumeCancel(t *testing.T) {
	tests := []struct {
		name       string
		control    []string // applied while batch 0 is held
		want       fleet.RolloutState
		wantStates string
	}{
		{"pause then resume", []string{"pause", "release", "resume"}, fleet.RolloutSucceeded,
			"booted booted booted booted booted booted"},
		{"cancel", []string{"cancel", "release"}, fleet.RolloutCancelled,
			"booted booted cancelled cancelled cancelled cancelled"},
		{"pause then cancel", []string{"pause", "release", "cancel"}, fleet.RolloutCancelled,
			"booted booted cancelled cancelled cancelled cancelled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 6)
			e.setBoot(host(0), bootSilent)
			e.setBoot(host(1), bootSilent)
			eng := e.start()
			ctx := context.Background()
			r, err := eng.Start(ctx, reimage.Request{Hosts: hostsN(6), Image: "new@2", Batch: 2, Actor: "op"})
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "batch 0 waiting", func() bool {
				hs := e.hosts(r.ID)
				return hs[0].State == fleet.HostWaiting && hs[1].State == fleet.HostWaiting
			})
			for _, c := range tt.control {
				var err error
				switch c {
				case "pause":
					var got fleet.Rollout
					got, err = eng.Pause(ctx, r.ID, "op")
					if err == nil && got.State != fleet.RolloutPaused {
						t.Fatalf("Pause returned %s", got.State)
					}
				case "resume":
					e.pw.Mark("resume")
					_, err = eng.Resume(ctx, r.ID, "op")
				case "cancel":
					_, err = eng.Cancel(ctx, r.ID, "op")
				case "release":
					for _, h := range []string{host(0), host(1)} {
						e.report(fleet.BootReport{Time: e.clk.Now(), Host: h, Image: "new@2", Phase: fleet.PhaseBooted, Digest: digest(2)})
					}
					eventually(t, "batch 0 booted", func() bool {
						hs := e.hosts(r.ID)
						return hs[0].State == fleet.HostBooted && hs[1].State == fleet.HostBooted
					})
				}
				if err != nil {
					t.Fatalf("%s: %v", c, err)
				}
			}
			r = e.wait(r.ID)
			if r.State != tt.want || states(e.hosts(r.ID)) != tt.wantStates {
				t.Fatalf("rollout %s, hosts %q; want %s, %q", r.State, states(e.hosts(r.ID)), tt.want, tt.wantStates)
			}
			// While paused no host started: every batch-1 call is after "resume".
			resumed := false
			for _, c := range e.pw.Calls() {
				if c.Op == "resume" {
					resumed = true
				}
				if c.Op == "set_next_boot" && c.Host >= host(2) && !resumed {
					t.Fatalf("%s started before resume", c.Host)
				}
			}
			// Finished rollouts cannot be controlled.
			if _, err := eng.Resume(ctx, r.ID, "op"); !errors.Is(err, fleet.ErrConflict) {
				t.Fatalf("Resume of finished rollout: %v, want ErrConflict", err)
			}
		})
	}
}

func TestAutoRevert(t *testing.T) {
	e := newEnv(t, 4)
	e.setBoot(host(0), bootFail)   // new image fails, old boots: reverted
	e.setBoot(host(1), bootBroken) // nothing boots: revert_failed
	h2, _ := e.st.GetHost(context.Background(), host(2))
	h2.DesiredImage = "" // never had an image: nothing to revert to
	e.st.PutHost(h2)
	e.setBoot(host(2), bootFail)
	eng := e.start()
	r, err := eng.Start(context.Background(), reimage.Request{Hosts: hostsN(4), Image: "new@2", Batch: 4,
		MaxFailures: 3, AutoRevert: true, Actor: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	r = e.wait(r.ID)
	hs := e.hosts(r.ID)
	if got, want := states(hs), "reverted revert_failed revert_failed booted"; got != want || r.State != fleet.RolloutSucceeded {
		t.Fatalf("rollout %s hosts %q, want succeeded %q", r.State, got, want)
	}
	if r.Counts.Failed != 3 || r.Counts.Reverted != 1 || r.Counts.RevertFailed != 2 {
		t.Fatalf("counts %+v", r.Counts)
	}
	wantCycles := []int{2, 2, 1, 1}
	wantDesired := []string{"old@1", "old@1", "new@2", "new@2"}
	for i := range 4 {
		h, _ := e.st.GetHost(context.Background(), host(i))
		if e.pw.Cycles(host(i)) != wantCycles[i] || hs[i].Attempts != wantCycles[i] || h.DesiredImage != wantDesired[i] {
			t.Errorf("%s: %d cycles (attempts %d), desired %s; want %d, %s", host(i), e.pw.Cycles(host(i)),
				hs[i].Attempts, h.DesiredImage, wantCycles[i], wantDesired[i])
		}
	}
	if !strings.Contains(hs[2].Error, "no previous image") || !strings.Contains(hs[1].Error, "revert") {
		t.Errorf("errors: %q, %q", hs[1].Error, hs[2].Error)
	}
	hist, _ := e.st.History(context.Background(), host(0))
	if len(hist) != 2 || hist[1].To != "old@1" || !strings.Contains(hist[1].Reason, "auto-revert") {
		t.Errorf("history of %s: %+v", host(0), hist)
	}
}

func TestTimeouts(t *testing.T) {
	tests := []struct {
		name    string
		beh     reimagetest.Behavior
		boot    string
		advance time.Duration // once the host is blocked
		want    fleet.HostState
		wantErr error
	}{
		{"set next boot hangs", reimagetest.Behavior{HangSetBoot: true}, bootOK, time.Minute, fleet.HostFailed, reimage.ErrBMCTimeout},
		{"power cycle hangs", reimagetest.Behavior{HangCycle: true}, bootOK, time.Minute, fleet.HostFailed, reimage.ErrBMCTimeout},
		{"slow power-on within call timeout", reimagetest.Behavior{CycleDelay: 50 * time.Second}, bootOK, 50 * time.Second, fleet.HostBooted, nil},
		{"slow power-on past call timeout", reimagetest.Behavior{CycleDelay: 90 * time.Second}, bootOK, time.Minute, fleet.HostFailed, reimage.ErrBMCTimeout},
		{"host never reports", reimagetest.Behavior{}, bootSilent, 10 * time.Minute, fleet.HostFailed, reimage.ErrBootTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 1)
			e.pw.Set(host(0), tt.beh)
			e.setBoot(host(0), tt.boot)
			eng := e.start()
			r, err := eng.Start(context.Background(), reimage.Request{Hosts: []string{host(0)}, Image: "new@2", Batch: 1, MaxFailures: 1})
			if err != nil {
				t.Fatal(err)
			}
			if tt.boot == bootSilent {
				eventually(t, "host waiting", func() bool { return e.hosts(r.ID)[0].State == fleet.HostWaiting })
				e.clk.Advance(tt.advance - time.Second)
				if s := e.hosts(r.ID)[0].State; s != fleet.HostWaiting {
					t.Fatalf("host %s before the boot timeout", s)
				}
				e.clk.Advance(time.Second)
			} else {
				// The call's timeout timer and any delay timer are set.
				eventually(t, "call blocked", func() bool {
					return e.pw.InCall(host(0)) == 1 && e.clk.Timers() >= 1+btoi(tt.beh.CycleDelay > 0)
				})
				e.clk.Advance(tt.advance)
			}
			r = e.wait(r.ID)
			h := e.hosts(r.ID)[0]
			if h.State != tt.want {
				t.Fatalf("host %s (%s), want %s", h.State, h.Error, tt.want)
			}
			if tt.wantErr != nil && !strings.Contains(h.Error, tt.wantErr.Error()) {
				t.Fatalf("error %q, want %v", h.Error, tt.wantErr)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestStartValidation(t *testing.T) {
	e := newEnv(t, 3)
	e.setBoot(host(0), bootSilent)
	eng := e.start()
	ctx := context.Background()
	busy, err := eng.Start(ctx, reimage.Request{Hosts: []string{host(0)}, Image: "new@2", Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  reimage.Request
		want error
	}{
		{"unknown image", reimage.Request{Hosts: []string{host(1)}, Image: "nope@1", Batch: 1}, fleet.ErrNotFound},
		{"unknown host", reimage.Request{Hosts: []string{"ghost"}, Image: "new@2", Batch: 1}, fleet.ErrNotFound},
		{"selector matches nothing", reimage.Request{Selector: "rack=r9", Image: "new@2", Batch: 1}, fleet.ErrNotFound},
		{"batch zero", reimage.Request{Hosts: []string{host(1)}, Image: "new@2"}, fleet.ErrInvalid},
		{"negative budget", reimage.Request{Hosts: []string{host(1)}, Image: "new@2", Batch: 1, MaxFailures: -1}, fleet.ErrInvalid},
		{"hosts and selector", reimage.Request{Hosts: []string{host(1)}, Selector: "rack=r1", Image: "new@2", Batch: 1}, fleet.ErrInvalid},
		{"no hosts", reimage.Request{Image: "new@2", Batch: 1}, fleet.ErrInvalid},
		{"duplicate host", reimage.Request{Hosts: []string{host(1), host(1)}, Image: "new@2", Batch: 1}, fleet.ErrInvalid},
		{"host in running rollout", reimage.Request{Hosts: []string{host(1), host(0)}, Image: "new@2", Batch: 1}, fleet.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := eng.Start(ctx, tt.req); !errors.Is(err, tt.want) {
				t.Fatalf("Start: %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := eng.Cancel(ctx, busy.ID, "op"); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Pause(ctx, "r-nope", "op"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("Pause unknown: %v", err)
	}
	if _, err := reimage.New(reimage.Config{CallTimeout: -1}, e.st, e.pw, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "CallTimeout") {
		t.Fatalf("New with bad config: %v", err)
	}
}

func TestRevertAndRefresh(t *testing.T) {
	e := newEnv(t, 3)
	eng := e.start()
	ctx := context.Background()

	// Refresh: h00, h01 move to new@2 (latest); h02 is there already.
	if err := e.st.Assign(ctx, []string{host(2)}, "new@2", "x", "x"); err != nil {
		t.Fatal(err)
	}
	e.st.Report(fleet.BootReport{Time: t0, Host: host(2), Image: "new@2", Phase: fleet.PhaseBooted, Digest: digest(2)})
	r, err := eng.Refresh(ctx, reimage.RefreshRequest{Selector: "rack=r1", Image: "new", Batch: 2, Actor: "timer"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != fleet.KindRefresh || strings.Join(r.Hosts, ",") != "h00,h01" {
		t.Fatalf("refresh rollout %+v", r)
	}
	if r = e.wait(r.ID); r.State != fleet.RolloutSucceeded {
		t.Fatalf("refresh %s", r.State)
	}
	if _, err := eng.Refresh(ctx, reimage.RefreshRequest{Selector: "rack=r1", Image: "new", Batch: 2}); !errors.Is(err, reimage.ErrNothingToDo) {
		t.Fatalf("second refresh: %v, want ErrNothingToDo", err)
	}
	if _, err := eng.Refresh(ctx, reimage.RefreshRequest{Image: "new@2", Batch: 2}); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("refresh with version: %v", err)
	}

	// Revert h00 to its previous image (old@1), then explicitly to new@2.
	tests := []struct {
		host, to, want string
		wantErr        error
	}{
		{host(0), "", "old@1", nil},
		{host(0), "new@2", "new@2", nil},
		{"ghost", "", "", fleet.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.host+"->"+tt.want, func(t *testing.T) {
			r, err := eng.Revert(ctx, reimage.RevertRequest{Host: tt.host, To: tt.to, Actor: "tech"})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Revert: %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r = e.wait(r.ID); r.State != fleet.RolloutSucceeded || r.Kind != fleet.KindRevert || r.Image != tt.want {
				t.Fatalf("revert rollout %+v", r)
			}
			h, _ := e.st.GetHost(ctx, tt.host)
			if h.DesiredImage != tt.want || h.BootedImage != tt.want {
				t.Fatalf("host desired %s booted %s, want %s", h.DesiredImage, h.BootedImage, tt.want)
			}
		})
	}
	list, err := eng.List(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("List: %d rollouts, %v", len(list), err)
	}
}
