// Package reimage runs rollouts: it moves hosts onto an image in batches
// (assign the image, set the next boot to network, power-cycle, wait for the
// host's booted report), stops starting hosts once more than the failure
// budget failed, optionally reverts failed hosts, and resumes unfinished
// rollouts after a restart without power-cycling a host twice for one step.
//
// The engine talks to the rest of kiln through three small interfaces
// declared here: State (the store), Power (the BMC layer) and Clock.
package reimage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Sentinel errors. Validation errors wrap fleet.ErrInvalid, unknown hosts,
// images and rollouts fleet.ErrNotFound, busy hosts and illegal pause/resume/
// cancel fleet.ErrConflict.
var (
	// ErrNothingToDo: Refresh found every selected host on NAME@latest.
	ErrNothingToDo = errors.New("nothing to do")
	// ErrNotRunning: the engine's Run has not been called or has ended.
	ErrNotRunning = errors.New("rollout engine is not running")
	// ErrBMCTimeout: a Power call did not return within Config.CallTimeout.
	ErrBMCTimeout = errors.New("bmc call timed out")
	// ErrBootTimeout: no booted report came within the rollout's boot timeout.
	ErrBootTimeout = errors.New("boot timeout")
	// ErrBootFailed: the host reported failed, or booted another image.
	ErrBootFailed = errors.New("boot failed")
)

// Power is the BMC side of a reimage, addressed by host name. Both calls
// must honour ctx (the engine cancels it after Config.CallTimeout) and must
// not put secrets in their errors. They are called at most once per host and
// step, from up to Batch goroutines per rollout at a time.
type Power interface {
	// SetNextBootNetwork makes the host's next boot (only the next) a
	// network boot.
	SetNextBootNetwork(ctx context.Context, host string) error
	// PowerCycle power-cycles the host (powers it on when it is off).
	PowerCycle(ctx context.Context, host string) error
}

// Fleet is the part of the store the engine reads hosts and images from and
// assigns images through. *store.Store implements it.
type Fleet interface {
	// GetHost returns the host; unknown names wrap fleet.ErrNotFound.
	GetHost(ctx context.Context, name string) (fleet.Host, error)
	// ListHosts returns the hosts the selector matches, ordered by name.
	ListHosts(ctx context.Context, sel fleet.Selector) ([]fleet.Host, error)
	// Image resolves a ref (NAME@latest too); unknown wraps fleet.ErrNotFound.
	Image(ctx context.Context, ref string) (fleet.Image, error)
	// Assign sets every host's desired image to ref in one transaction, with
	// one history entry per host that changes.
	Assign(ctx context.Context, hosts []string, ref, actor, reason string) error
	// History returns the host's assignment history, oldest first.
	History(ctx context.Context, host string) ([]fleet.HistoryEntry, error)
}

// Events is the event log. The engine appends from one goroutine per host
// at most, and never waits for it before a side effect.
type Events interface {
	AppendEvent(ctx context.Context, e fleet.Event) error
}

// EventBatcher may be implemented by an Events to append many events in one
// transaction; the engine uses it when present.
type EventBatcher interface {
	AppendEvents(ctx context.Context, es []fleet.Event) error
}

// Rollouts persists rollouts (see pkg/store/rollouts.go). UpdateRolloutHosts
// must be durable when it returns nil: the engine calls it before every side
// effect.
type Rollouts interface {
	CreateRollout(ctx context.Context, r fleet.Rollout, hosts []fleet.RolloutHost) (fleet.Rollout, error)
	PutRollout(ctx context.Context, r fleet.Rollout) error
	Rollout(ctx context.Context, id string) (fleet.Rollout, error)
	Rollouts(ctx context.Context) ([]fleet.Rollout, error)
	RolloutHosts(ctx context.Context, id string) ([]fleet.RolloutHost, error)
	UpdateRolloutHosts(ctx context.Context, id string, hosts []fleet.RolloutHost) error
}

// State is everything the engine keeps in the store.
type State interface {
	Fleet
	Events
	Rollouts
}

// Config tunes the engine. The zero value is usable.
type Config struct {
	// MaxInFlight caps the hosts in flight across all rollouts (each rollout
	// is also capped by its Batch). Default 1000.
	MaxInFlight int
	// CallTimeout bounds each Power call. Default 2m.
	CallTimeout time.Duration
	// BootTimeout is the boot timeout of requests that give none. Default 20m.
	BootTimeout time.Duration
}

// Defaults of Config.
const (
	DefaultMaxInFlight = 1000
	DefaultCallTimeout = 2 * time.Minute
	DefaultBootTimeout = 20 * time.Minute
)

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.MaxInFlight < 0:
		return c, fmt.Errorf("reimage: %w: Config.MaxInFlight %d is negative", fleet.ErrInvalid, c.MaxInFlight)
	case c.CallTimeout < 0:
		return c, fmt.Errorf("reimage: %w: Config.CallTimeout %s is negative", fleet.ErrInvalid, c.CallTimeout)
	case c.BootTimeout < 0:
		return c, fmt.Errorf("reimage: %w: Config.BootTimeout %s is negative", fleet.ErrInvalid, c.BootTimeout)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = DefaultBootTimeout
	}
	return c, nil
}

// Request asks for a reimage rollout (`kiln reimage`).
type Request struct {
	// Hosts names the hosts, in rollout order; or Selector selects them
	// (ordered by name). Exactly one of the two is given.
	Hosts    []string
	Selector string
	// Image is NAME@VERSION or NAME@latest (resolved at creation).
	Image string
	// Batch >= 1 hosts go at a time; batch k+1 starts when batch k is done.
	Batch int
	// MaxFailures >= 0 failed hosts are tolerated; one more fails the rollout.
	MaxFailures int
	// BootTimeout is how long after its power cycle a host has to report
	// booted; 0 means Config.BootTimeout.
	BootTimeout time.Duration
	// AutoRevert reimages failed hosts back to the image they had before.
	AutoRevert bool
	// Actor and Reason go into the rollout, the history and the events.
	Actor, Reason string
}

// RevertRequest asks for a one-host revert with a power cycle (`kiln revert
// HOST --reimage`).
type RevertRequest struct {
	Host string
	// To is the image to go back to; empty means the previous distinct
	// image of the host's history.
	To string
	// BootTimeout: 0 means Config.BootTimeout.
	BootTimeout   time.Duration
	Actor, Reason string
}

// RefreshRequest asks for a refresh (`kiln refresh`): reimage the selected
// hosts that are not on NAME@latest yet.
type RefreshRequest struct {
	// Selector selects the hosts; empty means every host.
	Selector string
	// Image is an image NAME (no version).
	Image       string
	Batch       int
	MaxFailures int
	BootTimeout time.Duration
	AutoRevert  bool
	Actor       string
	Reason      string
}
