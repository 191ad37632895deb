package bmc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stmcginnis/gofish/common"
)

// Sentinel errors, matched with errors.Is against errors returned by the
// Manager (and the Fake).
var (
	// ErrAuth means the BMC refused the credentials (or, for IPMI, refused
	// the RMCP+ session outright). Never retried.
	ErrAuth = errors.New("authentication failed")
	// ErrTimeout means the BMC did not answer within Config.Timeout.
	ErrTimeout = errors.New("timed out")
	// ErrUnsupported means the BMC or the driver cannot do what was asked
	// (e.g. an unknown boot device, a missing feature or endpoint).
	ErrUnsupported = errors.New("not supported")
	// ErrRejected means the BMC answered that the request was invalid
	// (IPMI "Invalid data field", HTTP 400/409...). Never retried.
	ErrRejected = errors.New("rejected by the BMC")
	// ErrInvalidURL means a BMC URL did not parse (see ParseURL).
	ErrInvalidURL = errors.New("invalid BMC URL")
)

// Error describes a failed BMC operation. Its message reads like
//
//	bmc: host r12-n07 (ipmi 10.1.2.7:623): power cycle: <what the BMC answered>
//
// Err never carries the BMC password: bmclib's text is scrubbed.
type Error struct {
	// Host is kiln's host name (Target.Host).
	Host string
	// Driver is the protocol used ("ipmi" or "redfish"); empty when the URL
	// did not parse.
	Driver Driver
	// BMC is the BMC address, "host:port".
	BMC string
	// Op is the operation, e.g. "power cycle", "power status", "next boot".
	Op string
	// Err is the cause; errors.Is(e, ErrAuth) and friends see through it.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	bmc := e.BMC
	if e.Driver != "" {
		bmc = string(e.Driver) + " " + e.BMC
	}
	if bmc == "" {
		bmc = "unknown BMC"
	}
	return fmt.Sprintf("bmc: host %s (%s): %s: %v", e.Host, bmc, e.Op, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// cause is a scrubbed copy of an error from bmclib: its text with the
// password removed and whitespace flattened, wrapping the sentinel it was
// classified as and the context error found in the original chain. The
// original error is dropped because its text may hold the password.
type cause struct {
	msg    string
	kind   error // a sentinel, or nil
	ctxErr error // context.Canceled / DeadlineExceeded, or nil
}

func (c *cause) Error() string {
	if c.kind != nil && c.msg != "" {
		return c.kind.Error() + ": " + c.msg
	}
	if c.kind != nil {
		return c.kind.Error()
	}
	return c.msg
}

func (c *cause) Unwrap() []error {
	var errs []error
	if c.kind != nil {
		errs = append(errs, c.kind)
	}
	if c.ctxErr != nil {
		errs = append(errs, c.ctxErr)
	}
	return errs
}

// ipmiSessionTimeout is the per-try timeout bmclib passes to ipmitool (-N 5).
// A dead IPMI BMC cannot make ipmitool fail faster than this; a session that
// fails sooner was refused by a live BMC.
const ipmiSessionTimeout = 5 * time.Second

// failure is the result of classifying an error from bmclib.
type failure struct {
	err       *cause
	transient bool // worth retrying with a new session
}

// classify turns an error from bmclib into a scrubbed cause, deciding its
// sentinel and whether it is transient. elapsed is how long the failed call
// took; ctx is the attempt's context.
func classify(err error, driver Driver, password string, elapsed time.Duration, ctx context.Context) failure {
	raw := err.Error()
	msg := scrub(raw, password)
	low := strings.ToLower(raw)
	c := &cause{msg: msg}
	switch {
	case errors.Is(err, context.Canceled):
		c.ctxErr = context.Canceled
	case errors.Is(err, context.DeadlineExceeded), ctx.Err() == context.DeadlineExceeded:
		c.ctxErr = context.DeadlineExceeded
	}
	if ctx.Err() == context.Canceled {
		c.ctxErr = context.Canceled
	}
	status := httpStatus(err)
	switch {
	case c.ctxErr == context.Canceled:
		return failure{err: c}
	case c.ctxErr == context.DeadlineExceeded,
		strings.Contains(low, "deadline exceeded"),
		strings.Contains(low, "client.timeout exceeded"),
		strings.Contains(low, "i/o timeout"):
		c.kind = ErrTimeout
		if c.ctxErr == nil {
			c.ctxErr = context.DeadlineExceeded
		}
		c.msg = timeoutMsg(msg)
		return failure{err: c, transient: true}
	case status == 401 || status == 403,
		strings.Contains(low, "unauthorized"),
		strings.Contains(low, "rakp"),
		strings.Contains(low, "invalid user name"),
		strings.Contains(low, "authentication"):
		c.kind = ErrAuth
		return failure{err: c}
	case driver == DriverIPMI && strings.Contains(low, "unable to establish ipmi v2 / rmcp+ session") && elapsed < ipmiSessionTimeout:
		// ipmitool (without -v, as bmclib runs it) prints the same line for
		// a wrong password and a dead BMC; only a live BMC answers this fast.
		c.kind = ErrAuth
		c.msg = "the BMC refused the RMCP+ session (wrong user or password, or cipher suite not allowed): " + msg
		return failure{err: c}
	case status == 404 || status == 405 || status == 501,
		strings.Contains(low, "not supported"),
		strings.Contains(low, "no powersetter implementations"),
		strings.Contains(low, "no powerstategetter implementations"),
		strings.Contains(low, "no bootdevicesetter implementations"),
		strings.Contains(low, "no providers"),
		strings.Contains(low, "invalid boot device"),
		strings.Contains(low, "executable file not found"):
		c.kind = ErrUnsupported
		return failure{err: c}
	case status == 400 || status == 409 || status == 412,
		strings.Contains(low, "invalid data field"),
		strings.Contains(low, "invalid command"),
		strings.Contains(low, "requested state type unknown"):
		c.kind = ErrRejected
		return failure{err: c}
	case status >= 500,
		strings.Contains(low, "connection refused"),
		strings.Contains(low, "connection reset"),
		strings.Contains(low, "broken pipe"),
		strings.Contains(low, "eof"),
		strings.Contains(low, "session"),
		strings.Contains(low, "timeout"),
		strings.Contains(low, "temporar"),
		strings.Contains(low, "insufficient resources"),
		strings.Contains(low, "node busy"):
		return failure{err: c, transient: true}
	}
	return failure{err: c}
}

// timeoutMsg drops bmclib's noise around a context deadline.
func timeoutMsg(msg string) string {
	if strings.TrimSpace(msg) == "" || strings.Contains(msg, "context deadline exceeded") {
		return "no answer from the BMC in time"
	}
	return msg
}

// httpStatus finds the HTTP status of a gofish error in err's chain (0 when
// there is none).
func httpStatus(err error) int {
	var ge *common.Error
	if errors.As(err, &ge) {
		return ge.HTTPReturnedStatusCode
	}
	return 0
}

// scrub removes every occurrence of the password and flattens bmclib's
// multi-line error lists into one line.
func scrub(s, password string) string {
	if password != "" {
		s = strings.ReplaceAll(s, password, "[REDACTED]")
	}
	s = strings.NewReplacer("1 error occurred:", "", "errors occurred:", "errors:").Replace(s)
	return strings.Join(strings.Fields(s), " ")
}
