package fleet

import (
	"errors"
	"testing"
	"time"
)

func TestCheckRolloutTransition(t *testing.T) {
	tests := []struct {
		name     string
		from, to RolloutState
		want     error
	}{
		{"start", RolloutPending, RolloutRunning, nil},
		{"pause", RolloutRunning, RolloutPaused, nil},
		{"resume", RolloutPaused, RolloutRunning, nil},
		{"cancel running", RolloutRunning, RolloutCancelled, nil},
		{"cancel paused", RolloutPaused, RolloutCancelled, nil},
		{"budget while paused", RolloutPaused, RolloutFailed, nil},
		{"succeed", RolloutRunning, RolloutSucceeded, nil},
		{"paused cannot succeed", RolloutPaused, RolloutSucceeded, ErrConflict},
		{"done stays done", RolloutSucceeded, RolloutRunning, ErrConflict},
		{"failed cannot resume", RolloutFailed, RolloutRunning, ErrConflict},
		{"cancelled cannot pause", RolloutCancelled, RolloutPaused, ErrConflict},
		{"same state is no transition", RolloutRunning, RolloutRunning, ErrConflict},
		{"unknown", RolloutRunning, "bogus", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckRolloutTransition(tt.from, tt.to)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("CheckRolloutTransition(%s, %s) = %v, want %v", tt.from, tt.to, err, tt.want)
			}
		})
	}
}

func TestCheckHostTransition(t *testing.T) {
	tests := []struct {
		name     string
		from, to HostState
		want     error
	}{
		{"start", HostPending, HostAssigning, nil},
		{"assigned", HostAssigning, HostBootSet, nil},
		{"cycle", HostBootSet, HostCycling, nil},
		{"cycled", HostCycling, HostWaiting, nil},
		{"report before waiting persisted", HostCycling, HostBooted, nil},
		{"booted", HostWaiting, HostBooted, nil},
		{"boot timeout", HostWaiting, HostFailed, nil},
		{"bmc error", HostBootSet, HostFailed, nil},
		{"assign error", HostAssigning, HostFailed, nil},
		{"revert", HostFailed, HostReverting, nil},
		{"no previous image", HostFailed, HostRevertFailed, nil},
		{"reverted", HostReverting, HostReverted, nil},
		{"revert failed", HostReverting, HostRevertFailed, nil},
		{"skip", HostPending, HostSkipped, nil},
		{"cancel", HostPending, HostCancelled, nil},
		{"cannot skip the cycle", HostAssigning, HostCycling, ErrConflict},
		{"cannot cycle twice", HostWaiting, HostCycling, ErrConflict},
		{"cannot cancel in flight", HostCycling, HostCancelled, ErrConflict},
		{"booted is final", HostBooted, HostFailed, ErrConflict},
		{"reverted is final", HostReverted, HostReverting, ErrConflict},
		{"pending cannot boot", HostPending, HostBooted, ErrConflict},
		{"unknown", "nope", HostBooted, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHostTransition(tt.from, tt.to)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("CheckHostTransition(%s, %s) = %v, want %v", tt.from, tt.to, err, tt.want)
			}
		})
	}
}

func TestRolloutHostSetState(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name         string
		path         []HostState
		autoRevert   bool
		wantErr      bool
		wantFinished bool
	}{
		{"success", []HostState{HostAssigning, HostBootSet, HostCycling, HostWaiting, HostBooted}, false, false, true},
		{"failed without revert is final", []HostState{HostAssigning, HostFailed}, false, false, true},
		{"failed with revert is not final", []HostState{HostAssigning, HostFailed}, true, false, false},
		{"reverted", []HostState{HostAssigning, HostFailed, HostReverting, HostReverted}, true, false, true},
		{"illegal step", []HostState{HostAssigning, HostWaiting}, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := RolloutHost{Host: "n1", State: HostPending}
			var err error
			for i, s := range tt.path {
				prev := h
				if err = h.SetState(s, t0.Add(time.Duration(i+1)*time.Second), tt.autoRevert); err != nil {
					if h != prev {
						t.Fatalf("failed SetState changed the host: %+v -> %+v", prev, h)
					}
					break
				}
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !h.Started.Equal(t0.Add(time.Second)) {
				t.Errorf("Started = %v, want first transition time", h.Started)
			}
			if got := !h.Finished.IsZero(); got != tt.wantFinished {
				t.Errorf("Finished set = %v, want %v (state %s)", got, tt.wantFinished, h.State)
			}
		})
	}
}

func TestCountHostsAndBatches(t *testing.T) {
	r := Rollout{Hosts: []string{"a", "b", "c", "d", "e", "f", "g"}, Batch: 3}
	if got := r.Batches(); got != 3 {
		t.Fatalf("Batches() = %d, want 3", got)
	}
	hs := NewRolloutHosts(&r)
	wantBatch := []int{0, 0, 0, 1, 1, 1, 2}
	for i, h := range hs {
		if h.Batch != wantBatch[i] || h.Index != i || h.Host != r.Hosts[i] || h.State != HostPending {
			t.Fatalf("host %d = %+v", i, h)
		}
	}
	states := []HostState{HostBooted, HostFailed, HostReverted, HostRevertFailed, HostWaiting, HostPending, HostSkipped}
	for i := range hs {
		hs[i].State = states[i]
	}
	got := CountHosts(hs)
	want := RolloutCounts{Total: 7, Pending: 1, InFlight: 1, Booted: 1, Failed: 3, Reverted: 1, RevertFailed: 1, Skipped: 1}
	if got != want {
		t.Fatalf("CountHosts = %+v, want %+v", got, want)
	}
}
