package reimage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/reimage"
	"github.com/immutableinfra/kiln/pkg/reimage/reimagetest"
	"github.com/immutableinfra/kiln/pkg/store"
)

// TestResumeFromCrashState stores a rollout as a crash would leave it, with
// hosts in every state, and checks that a new engine finishes it without
// power-cycling any host twice for one step.
func TestResumeFromCrashState(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 10)
	crash := t0.Add(-2 * time.Minute) // cycles issued before the crash
	r := fleet.Rollout{Kind: fleet.KindReimage, Image: "new@2", Digest: digest(2), Hosts: hostsN(10), Batch: 9,
		MaxFailures: 5, BootTimeout: 10 * time.Minute, AutoRevert: true, State: fleet.RolloutRunning, Actor: "ci",
		Created: crash, Started: crash}
	hs := fleet.NewRolloutHosts(&r)
	set := func(i int, st fleet.HostState, cycled, revertCycled bool) {
		hs[i].State, hs[i].From, hs[i].Started = st, "old@1", crash
		if cycled {
			hs[i].CycledAt, hs[i].Attempts = crash, 1
		}
		if revertCycled {
			hs[i].RevertCycledAt, hs[i].Attempts = crash.Add(time.Second), 2
		}
		if st != fleet.HostAssigning && st != fleet.HostPending {
			if err := e.st.Assign(ctx, []string{host(i)}, "new@2", "ci", "before crash"); err != nil {
				t.Fatal(err)
			}
		}
	}
	booted := func(i int, img string, d fleet.Digest, at time.Time) {
		e.st.Report(fleet.BootReport{Time: at, Host: host(i), Image: img, Phase: fleet.PhaseBooted, Digest: d})
	}
	set(1, fleet.HostAssigning, false, false)
	set(2, fleet.HostBootSet, false, false)
	set(3, fleet.HostCycling, true, false) // booted while kilnd was down
	booted(3, "new@2", digest(2), crash.Add(time.Minute))
	set(4, fleet.HostCycling, true, false) // still booting: report comes later
	set(5, fleet.HostWaiting, true, false) // reported failed while down
	e.st.Report(fleet.BootReport{Time: crash.Add(30 * time.Second), Host: host(5), Phase: fleet.PhaseFailed, Message: "no link"})
	set(6, fleet.HostBooted, true, false)
	set(7, fleet.HostReverting, true, true) // revert cycle issued, old image booted while down
	booted(7, "old@1", digest(1), crash.Add(90*time.Second))
	set(8, fleet.HostFailed, true, false) // failed, revert not begun
	hs[8].Error = "boot timeout"
	// h00 (batch 0) and h09 (batch 1) are pending.
	created, err := e.st.CreateRollout(ctx, r, hs)
	if err != nil {
		t.Fatal(err)
	}

	eng := e.start()
	eventually(t, "all but h04 settled", func() bool {
		hs, err := eng.Hosts(ctx, created.ID)
		if err != nil {
			return false
		}
		for i, h := range hs {
			if i != 4 && i != 9 && !h.State.Settled(true) {
				return false
			}
		}
		return true
	})
	if s := e.hosts(created.ID)[9].State; s != fleet.HostPending {
		t.Fatalf("h09 (batch 1) is %s while batch 0 still waits for h04", s)
	}
	e.report(fleet.BootReport{Time: e.clk.Now(), Host: host(4), Image: "new@2", Phase: fleet.PhaseBooted, Digest: digest(2)})
	got := e.wait(created.ID)

	wantStates := "booted booted booted booted booted reverted booted reverted reverted booted"
	if states(e.hosts(created.ID)) != wantStates || got.State != fleet.RolloutSucceeded {
		t.Fatalf("rollout %s, hosts %q, want succeeded %q", got.State, states(e.hosts(created.ID)), wantStates)
	}
	wantCycles := []int{1, 1, 1, 0, 0, 1, 0, 0, 1, 1} // cycles by the new engine
	for i, want := range wantCycles {
		if c := e.pw.Cycles(host(i)); c != want {
			t.Errorf("%s (was %s) cycled %d times after restart, want %d", host(i), hs[i].State, c, want)
		}
	}
}

// TestResumeAfterStop stops the engine while a batch waits for its boot
// reports; some reports arrive while it is down, the rest after a new engine
// took over. Every host is cycled exactly once.
func TestResumeAfterStop(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, 6)
	for i := range 3 {
		e.setBoot(host(i), bootSilent)
	}
	eng := e.start()
	r, err := eng.Start(ctx, reimage.Request{Hosts: hostsN(6), Image: "new@2", Batch: 3, Actor: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "batch 0 waiting", func() bool {
		hs := e.hosts(r.ID)
		return hs[0].State == fleet.HostWaiting && hs[1].State == fleet.HostWaiting && hs[2].State == fleet.HostWaiting
	})
	e.stop()
	e.mu.Lock()
	e.eng = nil
	e.mu.Unlock()
	e.clk.Advance(time.Minute)
	e.report(fleet.BootReport{Time: e.clk.Now(), Host: host(0), Image: "new@2", Phase: fleet.PhaseBooted, Digest: digest(2)})

	e.start()
	e.report(fleet.BootReport{Time: e.clk.Now(), Host: host(1), Image: "new@2", Phase: fleet.PhaseBooted, Digest: digest(2)})
	e.report(fleet.BootReport{Time: e.clk.Now(), Host: host(2), Image: "new@2", Phase: fleet.PhaseBooted, Digest: digest(2)})
	got := e.wait(r.ID)
	if got.State != fleet.RolloutSucceeded || got.Counts.Booted != 6 {
		t.Fatalf("rollout %s %+v", got.State, got.Counts)
	}
	for i := range 6 {
		if c := e.pw.Cycles(host(i)); c != 1 {
			t.Errorf("%s cycled %d times, want 1", host(i), c)
		}
	}
}

// bootSim simulates hosts netbooting against the real store: a boot attempt
// is issued (as the iPXE script handler does) and its report recorded.
type bootSim struct {
	st     *store.Store
	clk    reimage.Clock
	eng    func() *reimage.Engine
	silent map[string]bool
}

func (b *bootSim) onCycle(name string, _ int) {
	if b.silent[name] {
		return
	}
	ctx := context.Background()
	h, err := b.st.GetHost(ctx, name)
	if err != nil {
		return
	}
	img, err := b.st.Image(ctx, h.DesiredImage)
	if err != nil {
		return
	}
	tok, err := b.st.IssueBoot(ctx, name, h.MACs[0], img)
	if err != nil {
		return
	}
	rep, err := b.st.RecordReport(ctx, tok, fleet.BootReport{Phase: fleet.PhaseBooted, Digest: img.Rootfs.Digest})
	if err != nil {
		return
	}
	if eng := b.eng(); eng != nil {
		eng.BootReported(rep)
	}
}

func seedStore(t testing.TB, st *store.Store, n int) {
	t.Helper()
	ctx := context.Background()
	for i, v := range []string{"1", "2"} {
		img := fleet.Image{Ref: "img@" + v, Name: "img", Version: v, Arch: fleet.ArchX86_64,
			Rootfs: fleet.Artifact{Digest: digest(i + 1), Size: 1}, Created: t0.Add(time.Duration(i) * time.Hour)}
		if _, _, err := st.PutImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		h := fleet.Host{Name: fmt.Sprintf("n%05d", i), MACs: []string{fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)},
			Labels: map[string]string{"rack": "r1"}}
		if _, err := st.CreateHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
}

// TestResumeWithStore runs a rollout on the real bbolt store, stops the
// engine and closes the file mid-rollout, reopens it and lets a new engine
// finish: no host is cycled twice, history and events are stored.
func TestResumeWithStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kiln.db")
	clk := reimagetest.NewClock(t0.Add(2 * time.Hour))
	st, err := store.Open(path, store.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	seedStore(t, st, 4)
	var eng *reimage.Engine
	sim := &bootSim{st: st, clk: clk, eng: func() *reimage.Engine { return eng },
		silent: map[string]bool{"n00000": true, "n00001": true}}
	pw := &reimagetest.Power{Clock: clk, OnCycle: func(h string, n int) { sim.onCycle(h, n) }}

	run := func() (context.CancelFunc, chan error) {
		var err error
		eng, err = reimage.New(reimage.Config{}, st, pw, clk, nil, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- eng.Run(c) }()
		return cancel, done
	}
	cancel, done := run()
	r, err := eng.Start(ctx, reimage.Request{Selector: "rack=r1", Image: "img", Batch: 2, Actor: "alice", Reason: "nightly"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "batch 0 waiting", func() bool {
		hs, _ := st.RolloutHosts(ctx, r.ID)
		return len(hs) == 4 && hs[0].State == fleet.HostWaiting && hs[1].State == fleet.HostWaiting
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	if st, err = store.Open(path, store.Options{Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sim.st = st
	sim.silent = nil
	clk.Advance(time.Minute)
	sim.onCycle("n00000", 1) // boots while kilnd restarts
	cancel, done = run()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	defer stop()
	eventually(t, "n00000 booted", func() bool {
		hs, _ := eng.Hosts(ctx, r.ID)
		return len(hs) == 4 && hs[0].State == fleet.HostBooted
	})
	sim.onCycle("n00001", 1)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	got, err := eng.Wait(wctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != fleet.RolloutSucceeded || got.Counts.Booted != 4 || got.Image != "img@2" {
		t.Fatalf("rollout %+v", got)
	}
	for i := range 4 {
		if c := pw.Cycles(fmt.Sprintf("n%05d", i)); c != 1 {
			t.Errorf("n%05d cycled %d times", i, c)
		}
	}
	hist, err := st.History(ctx, "n00000")
	if err != nil || len(hist) != 1 || hist[0].To != "img@2" || hist[0].Actor != "alice" {
		t.Fatalf("history %+v, %v", hist, err)
	}
	stop() // flushes the event log
	evs, err := st.Events(ctx, store.EventFilter{Rollout: r.ID, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs {
		if ev.Host == "" {
			kinds = append(kinds, ev.Kind)
		}
	}
	if strings.Join(kinds, ",") != "rollout.start,rollout.finish" || len(evs) != 2+4*5 {
		t.Fatalf("events: %d, rollout-level %v", len(evs), kinds)
	}
}
