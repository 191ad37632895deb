package bmc

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	bmcapi "github.com/bmc-toolbox/bmclib/v2/bmc"
	"github.com/go-logr/logr"
)

// session is the part of *bmclib.Client the Manager uses.
type session interface {
	Open(ctx context.Context) error
	Close(ctx context.Context) error
	GetPowerState(ctx context.Context) (string, error)
	SetPowerState(ctx context.Context, state string) (bool, error)
	SetBootDevice(ctx context.Context, dev string, setPersistent, efiBoot bool) (bool, error)
	GetBootDeviceOverride(ctx context.Context) (bmcapi.BootDeviceOverride, error)
}

// newSession builds a bmclib client restricted to the one provider that
// speaks ep.Driver. It does not connect.
func (m *Manager) newSession(t Target, ep Endpoint) (session, error) {
	port := strconv.Itoa(ep.Port)
	log := logr.FromSlogHandler(&scrubHandler{h: m.log.Handler(), password: t.Password})
	opts := []bmclib.Option{bmclib.WithLogger(log)}
	switch ep.Driver {
	case DriverIPMI:
		opts = append(opts,
			bmclib.WithIpmitoolPort(port),
			bmclib.WithIpmitoolCipherSuite(m.cfg.IPMICipherSuite),
		)
		if m.cfg.IPMIToolPath != "" {
			opts = append(opts, bmclib.WithIpmitoolPath(m.cfg.IPMIToolPath))
		}
	case DriverRedfish:
		// bmclib v2.3.0 ignores WithRedfishHTTPClient (the gofish provider
		// is built from a copy of the client-wide HTTP client), so the TLS
		// policy goes into WithHTTPClient.
		opts = append(opts,
			bmclib.WithRedfishPort(port),
			bmclib.WithHTTPClient(m.redfishHTTPClient(t.InsecureTLS)),
		)
	}
	c := bmclib.NewClient(ep.Host, ep.User, t.Password, opts...)
	switch ep.Driver {
	case DriverIPMI:
		c.Registry.Drivers = c.Registry.Using("ipmi")
	case DriverRedfish:
		// "redfish" protocol also matches the dell provider; use gofish only.
		c.Registry.Drivers = c.Registry.For("gofish")
	}
	if len(c.Registry.Drivers) == 0 {
		return nil, &cause{kind: ErrUnsupported, msg: "no bmclib provider for " + string(ep.Driver) + " (is ipmitool installed?)"}
	}
	return c, nil
}

// redfishHTTPClient returns an HTTP client for one Redfish session. Its
// per-request timeout is set by bmclib from the Open context deadline.
func (m *Manager) redfishHTTPClient(insecure bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: insecure, RootCAs: m.cfg.RootCAs, MinVersion: tls.VersionTLS12}, //nolint:gosec // opt-in per Target for self-signed BMC certificates
		DialContext:         (&net.Dialer{Timeout: m.cfg.Timeout}).DialContext,
		TLSHandshakeTimeout: m.cfg.Timeout,
		DisableKeepAlives:   true,
	}
	return &http.Client{Transport: tr, Timeout: m.cfg.Timeout}
}

// scrubHandler is a slog.Handler that removes a password from messages and
// attribute values before passing records on. bmclib logs through it.
type scrubHandler struct {
	h        slog.Handler
	password string
}

func (s *scrubHandler) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s *scrubHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, "bmclib: "+scrub(r.Message, s.password), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(s.attr(a))
		return true
	})
	return s.h.Handle(ctx, nr)
}

func (s *scrubHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		as := v.Group()
		out := make([]any, 0, len(as))
		for _, g := range as {
			out = append(out, s.attr(g))
		}
		return slog.Group(a.Key, out...)
	case slog.KindString, slog.KindAny:
		return slog.String(a.Key, scrub(v.String(), s.password))
	default:
		return slog.Attr{Key: a.Key, Value: v}
	}
}

func (s *scrubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = s.attr(a)
	}
	return &scrubHandler{h: s.h.WithAttrs(out), password: s.password}
}

func (s *scrubHandler) WithGroup(name string) slog.Handler {
	return &scrubHandler{h: s.h.WithGroup(name), password: s.password}
}

// closeSession closes s on a fresh context bounded by CloseTimeout, so that a
// cancelled caller still logs out of the BMC.
func (m *Manager) closeSession(s session, t Target) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CloseTimeout)
	defer cancel()
	start := time.Now()
	if err := s.Close(ctx); err != nil {
		m.log.Debug("bmc: closing session failed", "target", t, "err", scrub(err.Error(), t.Password), "took", time.Since(start))
	}
}
