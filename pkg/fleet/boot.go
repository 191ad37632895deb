package fleet

import (
	"fmt"
	"net/netip"
	"time"
)

// Boot phases, in the order a successful boot reports them (see
// docs/boot-protocol.md). PhaseFailed may come at any point.
const (
	PhaseNetwork   = "network"
	PhaseFetched   = "fetched"
	PhaseVerified  = "verified"
	PhaseMounted   = "mounted"
	PhaseSwitching = "switching"
	PhaseBooted    = "booted"
	PhaseFailed    = "failed"
)

// ValidPhase reports whether p is a known boot phase.
func ValidPhase(p string) bool {
	switch p {
	case PhaseNetwork, PhaseFetched, PhaseVerified, PhaseMounted, PhaseSwitching, PhaseBooted, PhaseFailed:
		return true
	}
	return false
}

// Terminal reports whether a phase ends a boot attempt.
func Terminal(p string) bool { return p == PhaseBooted || p == PhaseFailed }

// BootAttempt is one boot of a host into an image, created when kilnd writes
// the host's iPXE script. Its token authenticates the attempt's reports.
type BootAttempt struct {
	ID     uint64    `json:"id"`
	Host   string    `json:"host"`
	Image  string    `json:"image"`
	Digest Digest    `json:"digest"`
	MAC    string    `json:"mac"`
	Issued time.Time `json:"issued"`
	// Phase is the newest phase reported; empty before the first report.
	Phase string `json:"phase,omitempty"`
}

// BootReport is one phase of a boot attempt as a host reported it.
type BootReport struct {
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Attempt uint64    `json:"attempt"`
	Image   string    `json:"image"`
	Phase   string    `json:"phase"`
	Digest  Digest    `json:"digest,omitempty"`
	Message string    `json:"message,omitempty"`
}

// Validate checks a report's phase and digest.
func (r BootReport) Validate() error {
	if !ValidPhase(r.Phase) {
		return fmt.Errorf("%w: phase %q is not one of network, fetched, verified, mounted, switching, booted, failed", ErrInvalid, r.Phase)
	}
	if r.Digest != "" {
		if _, err := ParseDigest(string(r.Digest)); err != nil {
			return err
		}
	}
	if len(r.Message) > 4096 {
		return fmt.Errorf("%w: message is longer than 4096 bytes", ErrInvalid)
	}
	return nil
}

// Lease is an address from the DHCP pool bound to one MAC until Expires.
type Lease struct {
	IP       netip.Addr `json:"ip"`
	MAC      string     `json:"mac"`
	Host     string     `json:"host,omitempty"`
	Hostname string     `json:"hostname,omitempty"`
	Expires  time.Time  `json:"expires"`
	// Declined marks an address a client reported in use by someone else
	// (DHCPDECLINE); it is not offered again until Expires.
	Declined bool `json:"declined,omitempty"`
}

// Expired reports whether the lease has run out at now.
func (l Lease) Expired(now time.Time) bool { return !now.Before(l.Expires) }

// Event is one entry of the event log: who did what to which host or rollout.
type Event struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Host    string    `json:"host,omitempty"`
	Rollout string    `json:"rollout,omitempty"`
	Actor   string    `json:"actor,omitempty"`
	Message string    `json:"message"`
}
