package bootagent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kernel command line keys read by kiln-init (docs/boot-protocol.md §1).
const (
	KeyServer      = "kiln.server"
	KeyHost        = "kiln.host"
	KeyImage       = "kiln.image"
	KeyRootfs      = "kiln.rootfs"
	KeyDigest      = "kiln.digest"
	KeySize        = "kiln.size"
	KeyMAC         = "kiln.mac"
	KeyToken       = "kiln.token"
	KeyState       = "kiln.state"
	KeyDebug       = "kiln.debug"
	KeyRebootDelay = "kiln.reboot_delay"
	KeyInit        = "init"
)

// Defaults applied by ParseCmdline when an optional key is absent.
const (
	DefaultRebootDelay = 30 * time.Second
	DefaultInit        = "/sbin/init"
)

// ErrMissingKey is returned (wrapped, naming the key) when a required
// kernel command line key is absent or empty.
var ErrMissingKey = errors.New("missing required kernel command line key")

// ErrInvalidKey is returned (wrapped, naming the key) when a kernel command
// line key has a value that does not follow the boot protocol.
var ErrInvalidKey = errors.New("invalid kernel command line value")

var (
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	tokenRE  = regexp.MustCompile(`^[A-Za-z0-9_=-]+$`)
)

// Config is the boot configuration kilnd passes on the kernel command line.
// ParseCmdline returns it validated and with defaults applied.
type Config struct {
	// Server is kilnd's base URL (kiln.server), without a trailing slash.
	Server url.URL
	// Host is the host's name in kiln (kiln.host).
	Host string
	// Image is the image reference NAME@VERSION (kiln.image).
	Image string
	// Rootfs is the absolute URL of the squashfs blob (kiln.rootfs).
	Rootfs url.URL
	// Digest is the squashfs digest, "sha256:" and 64 lowercase hex digits.
	Digest string
	// Size is the squashfs size in bytes; 0 means unknown (kiln.size absent).
	Size int64
	// MAC is the boot NIC's hardware address (kiln.mac).
	MAC net.HardwareAddr
	// Token is the one-time boot token. It is a secret: it is never logged
	// (LogValue leaves it out) and never appears in an error.
	Token string
	// StatePath is where, inside the new root, a filesystem labelled
	// kiln-state is mounted when one is found; "" means no state mount.
	StatePath string
	// Debug asks for /bin/sh instead of a reboot after a failure.
	Debug bool
	// RebootDelay is how long to wait after a failure before rebooting;
	// DefaultRebootDelay when kiln.reboot_delay is absent.
	RebootDelay time.Duration
	// Init is the image's init, an absolute path; DefaultInit when absent.
	Init string
}

// LogValue implements slog.LogValuer; it leaves out the boot token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("server", c.Server.String()),
		slog.String("host", c.Host),
		slog.String("image", c.Image),
		slog.String("rootfs", c.Rootfs.String()),
		slog.String("digest", c.Digest),
		slog.String("mac", c.MAC.String()),
	)
}

// SplitCmdline splits a kernel command line into parameters the way the
// kernel does: on white space, except inside double quotes, which are
// removed (`key="a b"` gives `key=a b`).
func SplitCmdline(s string) []string {
	var (
		out     []string
		cur     strings.Builder
		inQuote bool
		have    bool
	)
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// ParseCmdline parses the contents of /proc/cmdline into a Config. Keys it
// does not know are ignored; when a key repeats, the last one wins (as in
// the kernel). A missing required key gives an error wrapping ErrMissingKey,
// a malformed value one wrapping ErrInvalidKey; both name the key.
func ParseCmdline(s string) (Config, error) {
	kv := map[string]string{}
	flags := map[string]bool{}
	for _, p := range SplitCmdline(s) {
		if p == "--" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			flags[k] = true
			delete(kv, k)
			continue
		}
		kv[k] = v
		delete(flags, k)
	}
	required := func(k string) (string, error) {
		v := kv[k]
		if v == "" {
			return "", fmt.Errorf("%w %s", ErrMissingKey, k)
		}
		return v, nil
	}
	invalid := func(k, why string) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidKey, k, why)
	}
	var c Config
	for _, k := range []string{KeyServer, KeyHost, KeyImage, KeyRootfs, KeyDigest, KeyMAC, KeyToken} {
		if _, err := required(k); err != nil {
			return Config{}, err
		}
	}

	srv, err := parseHTTPURL(strings.TrimRight(kv[KeyServer], "/"))
	if err != nil {
		return Config{}, invalid(KeyServer, err.Error())
	}
	c.Server = *srv

	c.Host = kv[KeyHost]

	name, version, ok := strings.Cut(kv[KeyImage], "@")
	if !ok || name == "" || version == "" || strings.Contains(version, "@") {
		return Config{}, invalid(KeyImage, fmt.Sprintf("%q is not NAME@VERSION", kv[KeyImage]))
	}
	c.Image = kv[KeyImage]

	rootfs, err := parseHTTPURL(kv[KeyRootfs])
	if err != nil {
		return Config{}, invalid(KeyRootfs, err.Error())
	}
	c.Rootfs = *rootfs

	if !digestRE.MatchString(kv[KeyDigest]) {
		return Config{}, invalid(KeyDigest, fmt.Sprintf("%q is not sha256:<64 lowercase hex>", kv[KeyDigest]))
	}
	c.Digest = kv[KeyDigest]

	if v, ok := kv[KeySize]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return Config{}, invalid(KeySize, fmt.Sprintf("%q is not a byte count", v))
		}
		c.Size = n
	}

	mac, err := net.ParseMAC(kv[KeyMAC])
	if err != nil || len(mac) != 6 {
		return Config{}, invalid(KeyMAC, fmt.Sprintf("%q is not an Ethernet MAC address", kv[KeyMAC]))
	}
	c.MAC = mac

	if !tokenRE.MatchString(kv[KeyToken]) {
		// The token is a secret: do not echo it.
		return Config{}, invalid(KeyToken, "not URL-safe base64")
	}
	c.Token = kv[KeyToken]

	if v, ok := kv[KeyState]; ok {
		if !path.IsAbs(v) || path.Clean(v) == "/" {
			return Config{}, invalid(KeyState, fmt.Sprintf("%q is not an absolute path below /", v))
		}
		c.StatePath = path.Clean(v)
	}

	if flags[KeyDebug] {
		c.Debug = true
	} else if v, ok := kv[KeyDebug]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, invalid(KeyDebug, fmt.Sprintf("%q is not a flag value", v))
		}
		c.Debug = b
	}

	c.RebootDelay = DefaultRebootDelay
	if v, ok := kv[KeyRebootDelay]; ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return Config{}, invalid(KeyRebootDelay, fmt.Sprintf("%q is not a non-negative Go duration", v))
		}
		c.RebootDelay = d
	}

	c.Init = DefaultInit
	if v, ok := kv[KeyInit]; ok && v != "" {
		if !path.IsAbs(v) {
			return Config{}, invalid(KeyInit, fmt.Sprintf("%q is not an absolute path", v))
		}
		c.Init = v
	}
	return c, nil
}

func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("URL must not carry credentials")
	}
	return u, nil
}
