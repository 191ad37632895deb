package fleet

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// RolloutState is the life cycle of a rollout:
//
//	pending -> running <-> paused
//	running|paused -> succeeded|failed|cancelled
//
// A rollout is Done once it reaches succeeded, failed or cancelled; it may
// still have hosts in flight until Rollout.Finished is set.
type RolloutState string

// Rollout states.
const (
	RolloutPending   RolloutState = "pending"
	RolloutRunning   RolloutState = "running"
	RolloutPaused    RolloutState = "paused"
	RolloutSucceeded RolloutState = "succeeded"
	RolloutFailed    RolloutState = "failed"
	RolloutCancelled RolloutState = "cancelled"
)

// Rollout kinds: what created the rollout.
const (
	KindReimage = "reimage"
	KindRevert  = "revert"
	KindRefresh = "refresh"
)

var rolloutNext = map[RolloutState][]RolloutState{
	RolloutPending: {RolloutRunning, RolloutPaused, RolloutCancelled, RolloutFailed},
	RolloutRunning: {RolloutPaused, RolloutSucceeded, RolloutFailed, RolloutCancelled},
	RolloutPaused:  {RolloutRunning, RolloutFailed, RolloutCancelled},
}

// Valid reports whether s is a known rollout state.
func (s RolloutState) Valid() bool {
	switch s {
	case RolloutPending, RolloutRunning, RolloutPaused, RolloutSucceeded, RolloutFailed, RolloutCancelled:
		return true
	}
	return false
}

// Done reports whether s is final (succeeded, failed or cancelled).
func (s RolloutState) Done() bool {
	return s == RolloutSucceeded || s == RolloutFailed || s == RolloutCancelled
}

// CheckRolloutTransition returns nil when a rollout may go from one state to
// the other, and an error wrapping ErrConflict otherwise (ErrInvalid for an
// unknown state). Staying in the same state is not a transition.
func CheckRolloutTransition(from, to RolloutState) error {
	return checkTransition("rollout", rolloutNext, from.Valid() && to.Valid(), from, to)
}

// checkTransition looks a transition up in a table of allowed next states.
func checkTransition[S ~string](what string, next map[S][]S, valid bool, from, to S) error {
	if !valid {
		return fmt.Errorf("%w: %s state %q -> %q: unknown state", ErrInvalid, what, from, to)
	}
	if slices.Contains(next[from], to) {
		return nil
	}
	return fmt.Errorf("%w: %s is %s, cannot become %s", ErrConflict, what, from, to)
}

// HostState is where one host is in a rollout. The forward path is
//
//	pending -> assigning -> boot_set -> cycling -> waiting -> booted
//
// where assigning means "desired image and next boot device are being set",
// boot_set "both are set", cycling "a power cycle is about to be or has been
// issued" (persisted before the BMC call, so it is never repeated after a
// crash) and waiting "the BMC accepted the cycle; waiting for the booted
// report". Any step may end in failed. With auto-revert a failed host goes
// reverting -> reverted|revert_failed. Hosts never started end as skipped
// (the rollout failed or the host vanished) or cancelled.
type HostState string

// Host states in a rollout.
const (
	HostPending      HostState = "pending"
	HostAssigning    HostState = "assigning"
	HostBootSet      HostState = "boot_set"
	HostCycling      HostState = "cycling"
	HostWaiting      HostState = "waiting"
	HostBooted       HostState = "booted"
	HostFailed       HostState = "failed"
	HostReverting    HostState = "reverting"
	HostReverted     HostState = "reverted"
	HostRevertFailed HostState = "revert_failed"
	HostSkipped      HostState = "skipped"
	HostCancelled    HostState = "cancelled"
)

var hostNext = map[HostState][]HostState{
	HostPending:   {HostAssigning, HostSkipped, HostCancelled},
	HostAssigning: {HostBootSet, HostFailed},
	HostBootSet:   {HostCycling, HostFailed},
	HostCycling:   {HostWaiting, HostBooted, HostFailed},
	HostWaiting:   {HostBooted, HostFailed},
	HostFailed:    {HostReverting, HostRevertFailed},
	HostReverting: {HostReverted, HostRevertFailed},
}

// Valid reports whether s is a known host state.
func (s HostState) Valid() bool {
	_, ok := hostNext[s]
	switch s {
	case HostBooted, HostReverted, HostRevertFailed, HostSkipped, HostCancelled:
		ok = true
	}
	return ok
}

// InFlight reports whether a host in state s has been started and not
// finished: the engine owes it more work (assigning .. waiting, reverting).
func (s HostState) InFlight() bool {
	switch s {
	case HostAssigning, HostBootSet, HostCycling, HostWaiting, HostReverting:
		return true
	}
	return false
}

// Settled reports whether no more work is due for a host in state s. failed
// is settled only when the rollout does not auto-revert.
func (s HostState) Settled(autoRevert bool) bool {
	switch s {
	case HostBooted, HostReverted, HostRevertFailed, HostSkipped, HostCancelled:
		return true
	case HostFailed:
		return !autoRevert
	}
	return false
}

// Failure reports whether a host in state s counts against the failure
// budget (it failed, whatever became of its revert).
func (s HostState) Failure() bool {
	return s == HostFailed || s == HostReverting || s == HostReverted || s == HostRevertFailed
}

// CheckHostTransition returns nil when a host may go from one state to the
// other, and an error wrapping ErrConflict otherwise (ErrInvalid for an
// unknown state).
func CheckHostTransition(from, to HostState) error {
	return checkTransition("host", hostNext, from.Valid() && to.Valid(), from, to)
}

// RolloutCounts counts a rollout's hosts by outcome. Failed counts every host
// that failed (including those later reverted); Reverted and RevertFailed
// split the failed ones that auto-revert handled.
type RolloutCounts struct {
	Total        int `json:"total"`
	Pending      int `json:"pending"`
	InFlight     int `json:"in_flight"`
	Booted       int `json:"booted"`
	Failed       int `json:"failed"`
	Reverted     int `json:"reverted"`
	RevertFailed int `json:"revert_failed"`
	Skipped      int `json:"skipped"`
	Cancelled    int `json:"cancelled"`
}

// CountHosts tallies hosts by state.
func CountHosts(hosts []RolloutHost) RolloutCounts {
	c := RolloutCounts{Total: len(hosts)}
	for _, h := range hosts {
		switch h.State {
		case HostPending:
			c.Pending++
		case HostBooted:
			c.Booted++
		case HostSkipped:
			c.Skipped++
		case HostCancelled:
			c.Cancelled++
		case HostReverted:
			c.Reverted++
		case HostRevertFailed:
			c.RevertFailed++
		}
		if h.State.InFlight() {
			c.InFlight++
		}
		if h.State.Failure() {
			c.Failed++
		}
	}
	return c
}

// Rollout reimages a list of hosts onto one image in batches, stopping when
// more than MaxFailures hosts fail. Its hosts' progress is kept apart, one
// RolloutHost per host.
type Rollout struct {
	// ID is sortable by creation time: r-<unix millis base36>-<seq base36>.
	ID string `json:"id"`
	// Kind is reimage, revert or refresh.
	Kind string `json:"kind"`
	// Image is the resolved NAME@VERSION and Digest its rootfs digest: a host
	// has succeeded when it reports booted with this digest.
	Image  string `json:"image"`
	Digest Digest `json:"digest"`
	// Selector is the label selector the hosts were chosen by (empty when
	// they were named).
	Selector string `json:"selector,omitempty"`
	// Hosts are the host names resolved at creation, in rollout order. Host
	// i is in batch i/Batch.
	Hosts       []string      `json:"hosts,omitempty"`
	Batch       int           `json:"batch"`
	MaxFailures int           `json:"max_failures"`
	BootTimeout time.Duration `json:"boot_timeout"`
	AutoRevert  bool          `json:"auto_revert"`
	// State becomes failed or cancelled as soon as no new host may start;
	// hosts already in flight (and their reverts) still finish after that.
	// The rollout is over when Finished is set (see Over).
	State RolloutState `json:"state"`
	// Error says why a failed rollout failed.
	Error    string    `json:"error,omitempty"`
	Actor    string    `json:"actor"`
	Reason   string    `json:"reason,omitempty"`
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Counts is a snapshot of the hosts' states, refreshed by the engine.
	Counts RolloutCounts `json:"counts"`
}

// rolloutJSON is Rollout with BootTimeout as a Go duration string ("15m0s")
// instead of nanoseconds.
type rolloutJSON struct {
	plainRollout
	BootTimeout string `json:"boot_timeout"`
}

type plainRollout Rollout

// MarshalJSON writes boot_timeout as a duration string such as "15m0s".
func (r Rollout) MarshalJSON() ([]byte, error) {
	return json.Marshal(rolloutJSON{plainRollout(r), r.BootTimeout.String()})
}

// UnmarshalJSON reads boot_timeout as a duration string (or nanoseconds).
func (r *Rollout) UnmarshalJSON(b []byte) error {
	var v struct {
		plainRollout
		BootTimeout json.RawMessage `json:"boot_timeout"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Rollout(v.plainRollout)
	r.BootTimeout = 0
	if len(v.BootTimeout) == 0 || string(v.BootTimeout) == "null" {
		return nil
	}
	var str string
	if json.Unmarshal(v.BootTimeout, &str) == nil {
		d, err := time.ParseDuration(str)
		if err != nil {
			return fmt.Errorf("boot_timeout: %w", err)
		}
		r.BootTimeout = d
		return nil
	}
	var ns int64
	if err := json.Unmarshal(v.BootTimeout, &ns); err != nil {
		return fmt.Errorf("boot_timeout: %w", err)
	}
	r.BootTimeout = time.Duration(ns)
	return nil
}

// Over reports whether the rollout has ended: a final state and no host
// in flight any more.
func (r *Rollout) Over() bool { return r.State.Done() && !r.Finished.IsZero() }

// Batches returns the number of batches.
func (r *Rollout) Batches() int {
	if r.Batch <= 0 {
		return 0
	}
	return (len(r.Hosts) + r.Batch - 1) / r.Batch
}

// SetState moves the rollout to state to at now, setting Started when it
// first runs (Finished is set by the engine once no host is in flight, which
// may be after the state became Done); an illegal transition returns the
// CheckRolloutTransition error and leaves r unchanged.
func (r *Rollout) SetState(to RolloutState, now time.Time) error {
	if r.State == to {
		return nil
	}
	if err := CheckRolloutTransition(r.State, to); err != nil {
		return fmt.Errorf("rollout %s: %w", r.ID, err)
	}
	r.State = to
	if to == RolloutRunning && r.Started.IsZero() {
		r.Started = now
	}
	return nil
}

// RolloutHost is one host's progress in a rollout.
type RolloutHost struct {
	Host string `json:"host"`
	// Index is the host's position in Rollout.Hosts; Batch is Index/Batch.
	Index int       `json:"index"`
	Batch int       `json:"batch"`
	State HostState `json:"state"`
	// From is the host's desired image before the rollout assigned its own
	// (empty if it had none): where auto-revert takes it back.
	From string `json:"from,omitempty"`
	// Error says why the host failed (or why its revert failed).
	Error string `json:"error,omitempty"`
	// Attempts counts the power cycles issued for this host.
	Attempts int `json:"attempts"`
	// Started is when the host left pending, Updated its last transition,
	// Finished when it settled.
	Started  time.Time `json:"started,omitzero"`
	Updated  time.Time `json:"updated,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// CycledAt is when the forward power cycle was decided (persisted before
	// the BMC call); the boot timeout runs from it and only reports after it
	// count. RevertCycledAt is the same for the revert's power cycle.
	CycledAt       time.Time `json:"cycled_at,omitzero"`
	RevertCycledAt time.Time `json:"revert_cycled_at,omitzero"`
}

// SetState moves the host to state to at now (Started, Updated and Finished
// follow; autoRevert decides whether failed is final). An illegal transition
// returns the CheckHostTransition error and leaves h unchanged.
func (h *RolloutHost) SetState(to HostState, now time.Time, autoRevert bool) error {
	if h.State == to {
		return nil
	}
	if err := CheckHostTransition(h.State, to); err != nil {
		return fmt.Errorf("host %s: %w", h.Host, err)
	}
	if h.State == HostPending && h.Started.IsZero() && to != HostSkipped && to != HostCancelled {
		h.Started = now
	}
	h.State, h.Updated = to, now
	if to.Settled(autoRevert) {
		h.Finished = now
	}
	return nil
}

// NewRolloutHosts returns the pending progress records of r's hosts.
func NewRolloutHosts(r *Rollout) []RolloutHost {
	out := make([]RolloutHost, len(r.Hosts))
	for i, name := range r.Hosts {
		out[i] = RolloutHost{Host: name, Index: i, State: HostPending}
		if r.Batch > 0 {
			out[i].Batch = i / r.Batch
		}
	}
	return out
}
