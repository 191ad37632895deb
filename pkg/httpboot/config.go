package httpboot

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Defaults for the zero values of Config.
const (
	// DefaultRetries is how many times a script fetch is retried when
	// Config.Retries is 0.
	DefaultRetries = 3
	// MaxRetries bounds Config.Retries (each retry repeats the fetch command
	// on the script line).
	MaxRetries = 10
	// DefaultMaxReportBytes bounds a report body when Config.MaxReportBytes
	// is 0.
	DefaultMaxReportBytes = 16 << 10
	// MaxCmdline is the longest kernel command line a script may carry: the
	// x86 and arm64 kernels keep 2048 bytes including the NUL, and iPXE would
	// silently truncate a longer one (losing kiln's keys), so it is refused.
	MaxCmdline = 2047
	// FailDelay is how long a failed boot script waits, printing why, before
	// it exits to the next boot device.
	FailDelay = 10 * time.Second
)

// ErrConfig is wrapped by every error New returns for an invalid Config; the
// message names the field.
var ErrConfig = errors.New("httpboot: invalid config")

// Config configures a Handler. The zero value is valid: every field
// documents what its zero value means.
type Config struct {
	// ServerURL is how hosts reach kilnd: scheme http or https, a host and an
	// optional port, no path, query or user info (http://198.18.0.1:8080). It
	// is used for the URLs in scripts and for kiln.server. nil means the
	// request's own Host header, with http (https on a TLS connection), which
	// is the address iPXE used to fetch the script.
	ServerURL *url.URL
	// Retries is how many times the script repeats a failed kernel or initrd
	// fetch before giving up; 0 means DefaultRetries, at most MaxRetries.
	Retries int
	// StateMount is the kiln.state value: where, inside the new root, a
	// filesystem labelled kiln-state is mounted. "" leaves kiln.state out.
	// It must be an absolute path without spaces.
	StateMount string
	// ExtraCmdline is appended to every image's cmdline, before kiln's keys
	// (for site settings such as console=ttyS0). "" adds nothing.
	ExtraCmdline string
	// Debug adds the kiln.debug flag: kiln-init drops to a shell instead of
	// rebooting after a failure.
	Debug bool
	// RebootDelay is the kiln.reboot_delay value; 0 leaves the key out
	// (kiln-init's default applies). It must not be negative.
	RebootDelay time.Duration
	// MaxReportBytes bounds the body of POST /boot/report; 0 means
	// DefaultMaxReportBytes. A longer body gets 400.
	MaxReportBytes int64
	// OnReport, when not nil, is called with the stored report after the
	// store accepted it, once per accepted report, from the request's
	// goroutine and before the response is sent. It must return quickly (the
	// rollout engine only wakes up on it) and must be safe for concurrent
	// use.
	OnReport func(fleet.BootReport)
}

// settings is a validated Config with defaults applied.
type settings struct {
	server    string // "" = from the request
	retries   int
	state     string
	extra     string
	debug     bool
	reboot    time.Duration
	maxReport int64
	onReport  func(fleet.BootReport)
}

func (c Config) validate() (settings, error) {
	s := settings{
		retries:   c.Retries,
		state:     c.StateMount,
		extra:     strings.TrimSpace(c.ExtraCmdline),
		debug:     c.Debug,
		reboot:    c.RebootDelay,
		maxReport: c.MaxReportBytes,
		onReport:  c.OnReport,
	}
	if c.ServerURL != nil {
		u := c.ServerURL
		switch {
		case u.Scheme != "http" && u.Scheme != "https":
			return s, fmt.Errorf("%w: ServerURL %q: scheme must be http or https", ErrConfig, u.Redacted())
		case u.Host == "" || strings.ContainsAny(u.Host, " \t\r\n") || u.Opaque != "":
			return s, fmt.Errorf("%w: ServerURL %q: a host is required", ErrConfig, u.Redacted())
		case u.User != nil:
			return s, fmt.Errorf("%w: ServerURL %q: user info is not allowed", ErrConfig, u.Redacted())
		case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.ForceQuery:
			return s, fmt.Errorf("%w: ServerURL %q: path, query and fragment are not allowed", ErrConfig, u.Redacted())
		}
		s.server = u.Scheme + "://" + u.Host
	}
	switch {
	case c.Retries < 0 || c.Retries > MaxRetries:
		return s, fmt.Errorf("%w: Retries %d: must be 0 to %d", ErrConfig, c.Retries, MaxRetries)
	case c.Retries == 0:
		s.retries = DefaultRetries
	}
	if c.StateMount != "" {
		if !strings.HasPrefix(c.StateMount, "/") || !safeValue(c.StateMount) {
			return s, fmt.Errorf("%w: StateMount %q: must be an absolute path without spaces", ErrConfig, c.StateMount)
		}
	}
	if err := checkCmdline(s.extra); err != nil {
		return s, fmt.Errorf("%w: ExtraCmdline: %w", ErrConfig, err)
	}
	if c.RebootDelay < 0 {
		return s, fmt.Errorf("%w: RebootDelay %s: must not be negative", ErrConfig, c.RebootDelay)
	}
	switch {
	case c.MaxReportBytes < 0:
		return s, fmt.Errorf("%w: MaxReportBytes %d: must not be negative", ErrConfig, c.MaxReportBytes)
	case c.MaxReportBytes == 0:
		s.maxReport = DefaultMaxReportBytes
	}
	return s, nil
}
