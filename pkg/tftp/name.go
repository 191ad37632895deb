package tftp

import (
	"fmt"
	"io/fs"
	"strings"
	"unicode/utf8"
)

// MaxNameLen is the longest file name, in bytes as received, that the server
// accepts in a request.
const MaxNameLen = 255

// CleanName turns a file name received in a TFTP request into the name looked
// up in Config.Root, or fails with an error wrapping ErrBadName.
//
// Exactly one leading '/' is removed (many PXE ROMs send "/pxelinux.0"); the
// rest must then be a valid io/fs path (fs.ValidPath: slash-separated, no
// empty, "." or ".." elements, no trailing slash). Also refused: the empty
// name, names longer than MaxNameLen bytes, names that are not UTF-8 or hold
// a backslash or any control character (NUL included), and the root "."
// itself. Names are never case-folded or otherwise rewritten.
func CleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > MaxNameLen:
		return "", fmt.Errorf("%w: %d bytes, longer than %d", ErrBadName, len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return "", fmt.Errorf("%w: not UTF-8", ErrBadName)
	case strings.ContainsRune(name, '\\'):
		return "", fmt.Errorf("%w: backslash", ErrBadName)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", fmt.Errorf("%w: control character %U", ErrBadName, r)
		}
	}
	clean := strings.TrimPrefix(name, "/")
	if clean == "" || clean == "." || !fs.ValidPath(clean) {
		return "", fmt.Errorf("%w: not a relative path inside the served tree", ErrBadName)
	}
	return clean, nil
}
