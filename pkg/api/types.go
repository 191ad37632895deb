// Package api is kilnd's REST API (/api/v1, JSON, bearer token) and the Go
// client the kiln CLI uses. The server translates between HTTP and kiln's
// packages; it holds no state of its own.
package api

import (
	"github.com/immutableinfra/kiln/pkg/fleet"
)

// HostRequest creates a host. BMCPassword is write-only: no response ever
// carries it.
type HostRequest struct {
	Name            string            `json:"name"`
	MACs            []string          `json:"macs"`
	IP              string            `json:"ip,omitempty"`
	Gateway         string            `json:"gateway,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	BMCURL          string            `json:"bmc_url,omitempty"`
	BMCPassword     string            `json:"bmc_password,omitempty"`
	BMCInsecureTLS  bool              `json:"bmc_insecure_tls,omitempty"`
	NetbootDisabled bool              `json:"netboot_disabled,omitempty"`
	// BootMode overrides the firmware mode of the host's next network
	// boot: bios or uefi ("" = what the host last booted with).
	BootMode string `json:"boot_mode,omitempty"`
}

// HostUpdate changes what it sets and leaves the rest (nil) as it is. An
// empty IP, Gateway or BMCURL removes the fixed address, the gateway or the
// BMC (with its stored password); an empty BMCPassword removes the stored
// password. BMCPassword is write-only like HostRequest's.
type HostUpdate struct {
	MACs            []string `json:"macs,omitempty"`
	IP              *string  `json:"ip,omitempty"`
	Gateway         *string  `json:"gateway,omitempty"`
	BMCURL          *string  `json:"bmc_url,omitempty"`
	BMCPassword     *string  `json:"bmc_password,omitempty"`
	BMCInsecureTLS  *bool    `json:"bmc_insecure_tls,omitempty"`
	NetbootDisabled *bool    `json:"netboot_disabled,omitempty"`
}

// BootModeRequest sets or clears (empty Mode) a host's boot mode override.
type BootModeRequest struct {
	Mode string `json:"mode"`
}

// LabelRequest changes labels: "k=v" sets, "k-" removes.
type LabelRequest struct {
	Changes []string `json:"changes"`
}

// AssignRequest assigns Ref to Hosts, or to the hosts Selector matches.
type AssignRequest struct {
	Hosts    []string `json:"hosts,omitempty"`
	Selector string   `json:"selector,omitempty"`
	Ref      string   `json:"ref"`
	Reason   string   `json:"reason,omitempty"`
}

// RevertRequest reverts a host to its previous image, or to To.
type RevertRequest struct {
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// PowerRequest is a power action: status, on, off or cycle.
type PowerRequest struct {
	Action string `json:"action"`
}

// PowerResponse is the host's power state after the action.
type PowerResponse struct {
	Host  string `json:"host"`
	State string `json:"state"`
}

// GCRequest asks for an image garbage collection.
type GCRequest struct {
	Keep   int  `json:"keep"`
	DryRun bool `json:"dry_run"`
}

// RemoveResponse reports an image removal.
type RemoveResponse struct {
	Ref        string `json:"ref"`
	BytesFreed int64  `json:"bytes_freed"`
}

// ImportResponse reports an import: Created is false for a re-import of
// identical content.
type ImportResponse struct {
	Image   fleet.Image `json:"image"`
	Created bool        `json:"created"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
	// Reason tells the kinds of 409 apart: "exists" (the name is taken),
	// "conflict" (a MAC, IP or content clashes with what is stored) or
	// "in_use" (still needed, e.g. an assigned image). Empty otherwise.
	Reason string `json:"reason,omitempty"`
}

// The values of Error.Reason.
const (
	ReasonExists   = "exists"
	ReasonConflict = "conflict"
	ReasonInUse    = "in_use"
)
