package fleet

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// Host is one physical machine kiln boots.
type Host struct {
	Name string `json:"name"`
	// MACs are the host's NICs, normalized (lowercase, colon separated). A MAC
	// belongs to exactly one host.
	MACs []string `json:"macs"`
	// IP is the host's fixed address with its prefix; the zero value means the
	// host gets a lease from the pool.
	IP      netip.Prefix      `json:"ip"`
	Gateway netip.Addr        `json:"gateway"`
	Labels  map[string]string `json:"labels"`
	BMC     *BMC              `json:"bmc,omitempty"`
	// NetbootDisabled stops kiln from offering a boot file to the host.
	NetbootDisabled bool `json:"netboot_disabled,omitempty"`
	// BootMode is the host's firmware as last seen in DHCP ("bios", "uefi"),
	// empty before its first netboot. The BMC layer uses it for next-boot.
	BootMode string `json:"boot_mode,omitempty"`
	// BootModeOverride, when set ("bios" or "uefi"), is used for the BMC's
	// next-boot request instead of BootMode.
	BootModeOverride string `json:"boot_mode_override,omitempty"`
	// DesiredImage is the ref the host boots next; empty when unassigned.
	DesiredImage string `json:"desired_image"`
	// BootedImage and BootedDigest are what the host last reported booted.
	BootedImage  string    `json:"booted_image"`
	BootedDigest Digest    `json:"booted_digest,omitempty"`
	BootedAt     time.Time `json:"booted_at,omitzero"`
	// LastReport is the newest boot report of any phase.
	LastReport *BootReport `json:"last_report,omitempty"`
	Created    time.Time   `json:"created"`
	Updated    time.Time   `json:"updated"`
}

// BMC is how kiln reaches a host's baseboard management controller. The
// password is never part of it: the store keeps it encrypted apart.
type BMC struct {
	// URL is driver://user@host[:port], driver being ipmi or redfish.
	URL string `json:"url"`
	// InsecureTLS accepts a self-signed certificate (Redfish).
	InsecureTLS bool `json:"insecure_tls,omitempty"`
	// HasPassword tells whether a password is stored.
	HasPassword bool `json:"has_password"`
}

// Firmware boot modes, as seen in DHCP or set by an operator.
const (
	BootModeBIOS = "bios"
	BootModeUEFI = "uefi"
)

// NextBootMode is the firmware mode for the host's next network boot: the
// operator's override, else the mode it last netbooted with ("" unknown).
func (h *Host) NextBootMode() string {
	if h.BootModeOverride != "" {
		return h.BootModeOverride
	}
	return h.BootMode
}

// Validate checks a host before it is stored; the error names the field.
func (h *Host) Validate() error {
	if err := ValidateName("host name", h.Name); err != nil {
		return err
	}
	if len(h.MACs) == 0 {
		return fmt.Errorf("%w: host %s: at least one mac is required", ErrInvalid, h.Name)
	}
	seen := map[string]bool{}
	for i, m := range h.MACs {
		n, err := NormalizeMAC(m)
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		if seen[n] {
			return fmt.Errorf("%w: host %s: mac %s is given twice", ErrInvalid, h.Name, n)
		}
		seen[n] = true
		h.MACs[i] = n
	}
	if h.IP.IsValid() {
		if !h.IP.Addr().Is4() {
			return fmt.Errorf("%w: host %s: ip %s is not IPv4", ErrInvalid, h.Name, h.IP)
		}
		if h.IP.Bits() == 0 || h.IP.Bits() > 32 {
			return fmt.Errorf("%w: host %s: ip %s needs a prefix length (ADDR/PREFIX)", ErrInvalid, h.Name, h.IP)
		}
	}
	if h.Gateway.IsValid() {
		if !h.IP.IsValid() {
			return fmt.Errorf("%w: host %s: gateway %s given without ip", ErrInvalid, h.Name, h.Gateway)
		}
		if !h.IP.Masked().Contains(h.Gateway) {
			return fmt.Errorf("%w: host %s: gateway %s is outside %s", ErrInvalid, h.Name, h.Gateway, h.IP.Masked())
		}
	}
	switch h.BootModeOverride {
	case "", BootModeBIOS, BootModeUEFI:
	default:
		return fmt.Errorf("%w: host %s: boot mode %q (want bios, uefi or empty for what the host last booted with)", ErrInvalid, h.Name, h.BootModeOverride)
	}
	for k, v := range h.Labels {
		if err := ValidateLabel(k, v); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return nil
}

// Matches reports whether the host's labels satisfy the selector.
func (h *Host) Matches(s Selector) bool { return s.Matches(h.Labels) }

// ValidateLabel checks a label key and value: keys like names (up to 63
// characters, may contain '/'), values up to 63 characters without ',' '=' or
// white space.
func ValidateLabel(k, v string) error {
	if k == "" || len(k) > MaxNameLen {
		return fmt.Errorf("%w: label key %q must be 1 to %d characters", ErrInvalid, k, MaxNameLen)
	}
	for i, c := range k {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			i > 0 && strings.ContainsRune("-_./", c)
		if !ok {
			return fmt.Errorf("%w: label key %q: character %q is not allowed", ErrInvalid, k, c)
		}
	}
	if len(v) > MaxNameLen {
		return fmt.Errorf("%w: label %s: value longer than %d characters", ErrInvalid, k, MaxNameLen)
	}
	if strings.ContainsAny(v, ",= \t\n") {
		return fmt.Errorf("%w: label %s: value %q may not contain ',', '=' or spaces", ErrInvalid, k, v)
	}
	return nil
}

// ParseLabels parses "k=v" arguments into a map; the error names the argument.
func ParseLabels(args []string) (map[string]string, error) {
	m := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("%w: label %q is not k=v", ErrInvalid, a)
		}
		if err := ValidateLabel(k, v); err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

// Requirement is one term of a selector: key=value, key!=value, or key
// (present) and !key (absent).
type Requirement struct {
	Key   string
	Op    string // "=", "!=", "exists", "!exists"
	Value string
}

// Selector selects hosts by labels: comma-separated requirements that must
// all hold ("rack=r12,role!=db,gpu"). The empty selector matches every host.
type Selector []Requirement

// ParseSelector parses a selector; the error names the bad term.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for _, term := range strings.Split(s, ",") {
		term = strings.TrimSpace(term)
		var r Requirement
		switch {
		case strings.Contains(term, "!="):
			k, v, _ := strings.Cut(term, "!=")
			r = Requirement{Key: k, Op: "!=", Value: v}
		case strings.Contains(term, "="):
			k, v, _ := strings.Cut(term, "=")
			r = Requirement{Key: strings.TrimSuffix(k, "="), Op: "=", Value: strings.TrimPrefix(v, "=")}
		case strings.HasPrefix(term, "!"):
			r = Requirement{Key: term[1:], Op: "!exists"}
		default:
			r = Requirement{Key: term, Op: "exists"}
		}
		if err := ValidateLabel(r.Key, r.Value); err != nil {
			return nil, fmt.Errorf("selector term %q: %w", term, err)
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		v, ok := labels[r.Key]
		switch r.Op {
		case "=":
			if !ok || v != r.Value {
				return false
			}
		case "!=":
			if ok && v == r.Value {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		}
	}
	return true
}

// String returns the selector in its parseable form.
func (s Selector) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		switch r.Op {
		case "exists":
			parts[i] = r.Key
		case "!exists":
			parts[i] = "!" + r.Key
		default:
			parts[i] = r.Key + r.Op + r.Value
		}
	}
	return strings.Join(parts, ",")
}

// ApplyLabelChanges applies "k=v" (set) and "k-" (remove) arguments to labels
// and returns the new map; labels is not modified.
func ApplyLabelChanges(labels map[string]string, args []string) (map[string]string, error) {
	out := make(map[string]string, len(labels)+len(args))
	for k, v := range labels {
		out[k] = v
	}
	for _, a := range args {
		if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			if err := ValidateLabel(k, ""); err != nil {
				return nil, err
			}
			delete(out, k)
			continue
		}
		m, err := ParseLabels([]string{a})
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			out[k] = v
		}
	}
	return out, nil
}

// SortedLabels renders labels as "k=v,k2=v2" in key order.
func SortedLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}

// HasMAC reports whether the host owns mac (normalized).
func (h *Host) HasMAC(mac string) bool { return slices.Contains(h.MACs, mac) }
