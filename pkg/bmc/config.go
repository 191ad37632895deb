package bmc

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTimeout            = 30 * time.Second
	DefaultRetries            = 3
	DefaultBackoff            = time.Second
	DefaultMaxBackoff         = 30 * time.Second
	DefaultConcurrency        = 16
	DefaultIPMICipherSuite    = "3"
	DefaultPowerPollInterval  = time.Second
	DefaultPowerSettleTimeout = 60 * time.Second
	DefaultCloseTimeout       = 5 * time.Second
)

// Config tunes a Manager. The zero value of every field means the documented
// default; negative durations and counts are invalid unless stated.
type Config struct {
	// Timeout bounds each single BMC call (opening the session, one power or
	// boot command). Default 30s.
	Timeout time.Duration
	// Retries is how many times a call is retried, with a new session, after
	// a transient error (timeout, connection refused, session errors, HTTP
	// 5xx). Auth failures and rejected requests are never retried, nor is a
	// power cycle once the BMC may have executed it. 0 means the default 3;
	// -1 means no retries.
	Retries int
	// Backoff is the wait before the first retry; it doubles for each
	// further retry, capped at MaxBackoff. Default 1s.
	Backoff time.Duration
	// MaxBackoff caps the exponential backoff. Default 30s.
	MaxBackoff time.Duration
	// Concurrency is the global limit on BMC sessions open at once (one
	// per BMC in any case). Default 16.
	Concurrency int
	// IPMICipherSuite is passed to ipmitool as -C. Default "3".
	IPMICipherSuite string
	// IPMIToolPath is the ipmitool binary; empty means "ipmitool" from PATH.
	IPMIToolPath string
	// PowerPollInterval is how often the power state is read while waiting
	// for a power change to settle. Default 1s.
	PowerPollInterval time.Duration
	// PowerSettleTimeout bounds the wait for a host to read "off" after
	// power off (BMCs may report "on" during a graceful shutdown wait), both
	// in SetPower(PowerOff) and before powering on again. Default 60s.
	PowerSettleTimeout time.Duration
	// CloseTimeout bounds closing a session; it runs on its own context so
	// that sessions are closed even after the caller gave up. Default 5s.
	CloseTimeout time.Duration
	// RootCAs verifies Redfish BMC certificates when Target.InsecureTLS is
	// false; nil means the system pool.
	RootCAs *x509.CertPool
}

// withDefaults returns cfg with defaults applied, or an error naming the
// first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	dur := func(name string, v *time.Duration, def time.Duration) {
		switch {
		case *v < 0:
			errs = append(errs, fmt.Errorf("bmc: config: %s must not be negative (got %v)", name, *v))
		case *v == 0:
			*v = def
		}
	}
	dur("Timeout", &cfg.Timeout, DefaultTimeout)
	dur("Backoff", &cfg.Backoff, DefaultBackoff)
	dur("MaxBackoff", &cfg.MaxBackoff, DefaultMaxBackoff)
	dur("PowerPollInterval", &cfg.PowerPollInterval, DefaultPowerPollInterval)
	dur("PowerSettleTimeout", &cfg.PowerSettleTimeout, DefaultPowerSettleTimeout)
	dur("CloseTimeout", &cfg.CloseTimeout, DefaultCloseTimeout)
	switch {
	case cfg.Retries < -1:
		errs = append(errs, fmt.Errorf("bmc: config: Retries must be -1 (none), 0 (default %d) or positive (got %d)", DefaultRetries, cfg.Retries))
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries == -1:
		cfg.Retries = 0
	}
	switch {
	case cfg.Concurrency < 0:
		errs = append(errs, fmt.Errorf("bmc: config: Concurrency must not be negative (got %d)", cfg.Concurrency))
	case cfg.Concurrency == 0:
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.IPMICipherSuite == "" {
		cfg.IPMICipherSuite = DefaultIPMICipherSuite
	} else if !validCipherSuite(cfg.IPMICipherSuite) {
		errs = append(errs, fmt.Errorf("bmc: config: IPMICipherSuite must be a number 0-17 (got %q)", cfg.IPMICipherSuite))
	}
	if cfg.MaxBackoff < cfg.Backoff && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("bmc: config: MaxBackoff (%v) must not be below Backoff (%v)", cfg.MaxBackoff, cfg.Backoff))
	}
	return cfg, errors.Join(errs...)
}

func validCipherSuite(s string) bool {
	if len(s) == 0 || len(s) > 2 {
		return false
	}
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
		n = n*10 + int(r-'0')
	}
	return n <= 17
}
