package fleet

import (
	"fmt"
	"net"
	"strings"
)

// MaxNameLen bounds host names, image names and versions.
const MaxNameLen = 63

// ValidateName checks a host or image name: 1 to 63 characters of lowercase
// letters, digits, '-', '_' and '.', starting with a letter or digit. what names
// the field in the error ("host name", "image name").
func ValidateName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s %q is longer than %d characters", ErrInvalid, what, s, MaxNameLen)
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return fmt.Errorf("%w: %s %q: character %q at %d is not allowed (use a-z, 0-9, '-', '_', '.'; start with a letter or digit)", ErrInvalid, what, s, c, i)
		}
	}
	return nil
}

// ValidateVersion checks an image version: like a name, but upper case
// letters and '+' are allowed too (2026.11.26, 1.2.0+build3). "latest" is
// reserved.
func ValidateVersion(s string) error {
	if s == "" {
		return fmt.Errorf("%w: image version is empty", ErrInvalid)
	}
	if s == Latest {
		return fmt.Errorf("%w: image version %q is reserved", ErrInvalid, s)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: image version %q is longer than %d characters", ErrInvalid, s, MaxNameLen)
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.' || c == '+') && i > 0:
		default:
			return fmt.Errorf("%w: image version %q: character %q at %d is not allowed", ErrInvalid, s, c, i)
		}
	}
	return nil
}

// NormalizeMAC parses an Ethernet MAC in any form net.ParseMAC accepts and
// returns it lowercase and colon separated, as iPXE writes it.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%w: mac %q is not an Ethernet MAC address (want aa:bb:cc:dd:ee:ff)", ErrInvalid, s)
	}
	return hw.String(), nil
}
