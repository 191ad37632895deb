package bmc

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Driver names the protocol used to talk to a BMC.
type Driver string

const (
	// DriverIPMI is IPMI v2.0 over LAN (RMCP+), driven through ipmitool.
	DriverIPMI Driver = "ipmi"
	// DriverRedfish is DMTF Redfish over HTTPS, driven through bmclib's gofish provider.
	DriverRedfish Driver = "redfish"
)

// DefaultPort returns the port used when a BMC URL has none: 623 for IPMI and
// 443 for Redfish. It returns 0 for an unknown driver.
func (d Driver) DefaultPort() int {
	switch d {
	case DriverIPMI:
		return 623
	case DriverRedfish:
		return 443
	}
	return 0
}

// Endpoint is a parsed BMC URL ("ipmi://USER@HOST[:PORT]" or
// "redfish://USER@HOST[:PORT]"). It never holds a password.
type Endpoint struct {
	// Driver is the protocol, from the URL scheme.
	Driver Driver
	// User is the BMC user name (percent-decoded).
	User string
	// Host is the BMC host name or IP address, without brackets for IPv6.
	Host string
	// Port is the BMC port; ParseURL fills in Driver.DefaultPort() when the
	// URL has none.
	Port int
}

// Addr returns "host:port" (IPv6 in brackets), the key under which the
// Manager serialises sessions to one BMC.
func (e Endpoint) Addr() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
}

// String returns the canonical URL, e.g. "ipmi://admin@10.1.2.7:623".
func (e Endpoint) String() string {
	return string(e.Driver) + "://" + url.PathEscape(e.User) + "@" + e.Addr()
}

// ParseURL validates a BMC URL of the form "ipmi://USER@HOST[:PORT]" or
// "redfish://USER@HOST[:PORT]" and returns its parts. A password inside the
// URL ("user:pass@") is refused, and the error never repeats it. Every error
// wraps ErrInvalidURL.
func ParseURL(s string) (Endpoint, error) {
	var ep Endpoint
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return ep, invalidURL("missing scheme (want ipmi:// or redfish://)")
	}
	switch Driver(strings.ToLower(scheme)) {
	case DriverIPMI:
		ep.Driver = DriverIPMI
	case DriverRedfish:
		ep.Driver = DriverRedfish
	default:
		return ep, invalidURL(fmt.Sprintf("unsupported scheme %q (want ipmi or redfish)", scheme))
	}
	// The user info ends at the last '@'; a password may itself contain '@',
	// so nothing after "user:" is ever echoed.
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ep, invalidURL("missing user (want " + scheme + "://USER@HOST)")
	}
	userinfo, hostport := rest[:at], rest[at+1:]
	if strings.Contains(userinfo, ":") {
		return ep, invalidURL("a password must not be part of the BMC URL; store it separately")
	}
	user, err := url.PathUnescape(userinfo)
	if err != nil || user == "" || strings.ContainsAny(user, " \t\r\n/") {
		return ep, invalidURL("invalid or empty user")
	}
	ep.User = user
	hostport = strings.TrimSuffix(hostport, "/")
	if strings.ContainsAny(hostport, "/?#") {
		return ep, invalidURL("a BMC URL has no path, query or fragment")
	}
	if hostport == "" {
		return ep, invalidURL("missing host")
	}
	host, portStr := hostport, ""
	if strings.HasPrefix(hostport, "[") || strings.Count(hostport, ":") == 1 {
		h, p, err := net.SplitHostPort(hostport)
		if err != nil {
			if !strings.HasPrefix(hostport, "[") || !strings.HasSuffix(hostport, "]") {
				return ep, invalidURL(fmt.Sprintf("invalid host:port %q", hostport))
			}
			h = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
		}
		host, portStr = h, p
	} else if strings.Contains(hostport, ":") {
		return ep, invalidURL("IPv6 addresses must be in brackets, e.g. [2001:db8::7]")
	}
	if host == "" || strings.ContainsAny(host, " \t\r\n@[]") {
		return ep, invalidURL(fmt.Sprintf("invalid host %q", host))
	}
	ep.Host = host
	ep.Port = ep.Driver.DefaultPort()
	if portStr != "" {
		p, err := strconv.Atoi(portStr)
		if err != nil || p < 1 || p > 65535 {
			return ep, invalidURL(fmt.Sprintf("invalid port %q", portStr))
		}
		ep.Port = p
	}
	return ep, nil
}

func invalidURL(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidURL, reason)
}

// Target is one host's BMC as the Manager needs it. Its String, Format and
// LogValue methods never include the password, and the password is not
// serialised to JSON.
type Target struct {
	// Host is kiln's name for the host; it appears in errors and logs.
	Host string
	// URL is "ipmi://USER@HOST[:PORT]" or "redfish://USER@HOST[:PORT]"
	// (see ParseURL).
	URL string
	// Password is the BMC password. It is never logged or put in errors.
	Password string `json:"-"`
	// InsecureTLS skips verification of a Redfish BMC's certificate (most
	// BMCs ship self-signed ones). Ignored for IPMI.
	InsecureTLS bool
}

// String returns "HOST (URL)" without the password.
func (t Target) String() string {
	return t.Host + " (" + redactURL(t.URL) + ")"
}

// Format makes every fmt verb (%v, %+v, %#v, %s, ...) print String(), so
// that a Target printed by accident cannot leak the password.
func (t Target) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte(t.String()))
}

// MarshalJSON encodes Host, URL (redacted, see String) and InsecureTLS; the
// password is never encoded.
func (t Target) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Host        string
		URL         string
		InsecureTLS bool
	}{t.Host, redactURL(t.URL), t.InsecureTLS})
}

// LogValue implements slog.LogValuer: a group with host and bmc, never the
// password.
func (t Target) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", t.Host), slog.String("bmc", redactURL(t.URL)))
}

// redactURL returns the URL with anything after "user:" in the user info
// replaced, so that even an invalid Target URL carrying a password is safe
// to print.
func redactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if strings.Contains(s, "@") {
			return "<invalid URL>"
		}
		return s
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s
	}
	if user, _, hasPass := strings.Cut(rest[:at], ":"); hasPass {
		return scheme + "://" + user + ":xxxxx@" + rest[at+1:]
	}
	return s
}
