package tftp

import (
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// Defaults applied to zero Config fields.
const (
	// DefaultTimeout is how long a transfer waits for each ACK before it
	// retransmits.
	DefaultTimeout = 2 * time.Second
	// DefaultRetries is how many times one packet is sent before the
	// transfer is abandoned.
	DefaultRetries = 5
	// DefaultMaxConcurrent bounds transfers in flight.
	DefaultMaxConcurrent = 64
	// DefaultMaxBlockSize is the largest blksize granted: a 1500-byte
	// Ethernet MTU less the IPv4 (20), UDP (8) and TFTP DATA (4) headers, so
	// that no DATA packet is fragmented on a standard network.
	DefaultMaxBlockSize = 1468
	// MinBlockSize and MaxBlockSize bound Config.MaxBlockSize (RFC 1350's
	// fixed block and RFC 2348's largest blksize).
	MinBlockSize = 512
	// MaxBlockSizeLimit is the largest value Config.MaxBlockSize may take.
	MaxBlockSizeLimit = 65464
)

// Package sentinels, checked with errors.Is.
var (
	// ErrInvalidConfig wraps every error New returns for a bad Config; the
	// message names the field.
	ErrInvalidConfig = errors.New("tftp: invalid config")
	// ErrBadName wraps every error CleanName returns.
	ErrBadName = errors.New("tftp: bad file name")
	// ErrListener wraps the error Serve returns when reading from its
	// listening conn fails for a reason other than shutdown.
	ErrListener = errors.New("tftp: listener failed")
)

// Config configures a Server. The zero value of every field except Root
// means the documented default.
type Config struct {
	// Root is the set of files served, looked up by exact name after
	// CleanName: for example firmware.FS(), or Overlay(assetDir,
	// firmware.FS()). Only regular files are served; directories read as
	// "file not found". Required.
	Root fs.FS
	// Timeout is how long a transfer waits for each ACK before it
	// retransmits; 0 means DefaultTimeout. A transfer whose client goes
	// silent ends after about Timeout*Retries, which is also the longest a
	// shutdown waits for it.
	Timeout time.Duration
	// Retries is how many times a packet is sent before the transfer is
	// abandoned; 0 means DefaultRetries.
	Retries int
	// MaxConcurrent bounds the transfers in flight across all Serve calls
	// of one Server; further read requests are refused with a TFTP error
	// packet (code 0, "server busy") and counted. 0 means
	// DefaultMaxConcurrent.
	MaxConcurrent int
	// MaxBlockSize is the largest blksize (RFC 2348) granted to a client
	// that asks for more; clients that do not ask get 512. 0 means
	// DefaultMaxBlockSize; otherwise it must be within
	// [MinBlockSize, MaxBlockSizeLimit]. Raise it only on networks whose MTU
	// carries it unfragmented (or on loopback).
	MaxBlockSize int
}

// withDefaults validates c and returns it with defaults filled in.
func (c Config) withDefaults() (Config, error) {
	if c.Root == nil {
		return c, fmt.Errorf("%w: Root: nil, need the file system to serve", ErrInvalidConfig)
	}
	switch {
	case c.Timeout < 0:
		return c, fmt.Errorf("%w: Timeout: %v is negative", ErrInvalidConfig, c.Timeout)
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	}
	switch {
	case c.Retries < 0:
		return c, fmt.Errorf("%w: Retries: %d is negative", ErrInvalidConfig, c.Retries)
	case c.Retries == 0:
		c.Retries = DefaultRetries
	}
	switch {
	case c.MaxConcurrent < 0:
		return c, fmt.Errorf("%w: MaxConcurrent: %d is negative", ErrInvalidConfig, c.MaxConcurrent)
	case c.MaxConcurrent == 0:
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	switch {
	case c.MaxBlockSize == 0:
		c.MaxBlockSize = DefaultMaxBlockSize
	case c.MaxBlockSize < MinBlockSize || c.MaxBlockSize > MaxBlockSizeLimit:
		return c, fmt.Errorf("%w: MaxBlockSize: %d is outside [%d, %d]", ErrInvalidConfig, c.MaxBlockSize, MinBlockSize, MaxBlockSizeLimit)
	}
	return c, nil
}
