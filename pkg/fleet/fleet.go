// Package fleet is kiln's domain: hosts, images, assignments, boot reports and
// the rules that connect them. It knows no protocol and no database; the store
// persists these types and the services act on them.
package fleet

import "errors"

// Sentinel errors shared by every layer. Callers test them with errors.Is; the
// layers wrap them with context (which host, which ref).
var (
	// ErrNotFound: the named host, image, lease, rollout or token does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the thing being created exists already.
	ErrExists = errors.New("already exists")
	// ErrConflict: the request contradicts stored state (a MAC owned by another
	// host, an image version re-imported with other content).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the input is malformed; the message names the field.
	ErrInvalid = errors.New("invalid")
	// ErrInUse: the thing is still referenced (an image assigned to a host).
	ErrInUse = errors.New("in use")
	// ErrStale: a boot token that was superseded or already used.
	ErrStale = errors.New("stale")
)
