package squashfs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/immutableinfra/kiln/pkg/fspath"
)

// FindKernel finds the Linux kernel of an OS image. It looks at
// boot/vmlinuz-<version>, boot/vmlinuz and the vmlinuz symlink at the root,
// following symbolic links, and keeps regular files only. It returns the
// kernel's resolved path inside fsys (e.g. "boot/vmlinuz-6.1.0-27-cloud-amd64")
// and its version: taken from the file name when it has one; otherwise the
// name of the only directory under lib/modules, or "" when there is not
// exactly one. When several versioned kernels exist the newest wins, by a
// version-aware comparison (6.10 > 6.9, -27 > -9). With none it returns an
// error wrapping ErrNoKernel that says where it looked.
//
// fsys may be any fs.FS; symbolic links are resolved when it implements
// fs.ReadLinkFS (this package's FS does).
func FindKernel(fsys fs.FS) (path string, kver string, err error) {
	type cand struct{ path, ver string }
	var cands []cand
	seen := map[string]bool{}
	add := func(name string) error {
		p, err := fspath.Realpath(fsys, name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("squashfs: looking for the kernel at %s: %w", name, err)
		}
		if seen[p] {
			return nil
		}
		fi, err := fs.Stat(fsys, p)
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		seen[p] = true
		cands = append(cands, cand{path: p, ver: kernelVersion(p)})
		return nil
	}
	var names []string
	if ents, err := fs.ReadDir(fsys, "boot"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "vmlinuz-") {
				names = append(names, "boot/"+e.Name())
			}
		}
	}
	names = append(names, "boot/vmlinuz", "vmlinuz")
	for _, n := range names {
		if err := add(n); err != nil {
			return "", "", err
		}
	}
	if len(cands) == 0 {
		return "", "", fmt.Errorf("%w: looked for regular files at /boot/vmlinuz-*, /boot/vmlinuz and /vmlinuz (symlinks followed)", ErrNoKernel)
	}
	best := cands[0]
	for _, c := range cands[1:] {
		if best.ver == "" || (c.ver != "" && compareVersions(c.ver, best.ver) > 0) {
			best = c
		}
	}
	if best.ver == "" {
		best.ver = onlyModulesDir(fsys)
	}
	return best.path, best.ver, nil
}

// kernelVersion derives the version from a vmlinuz-<version> file name.
func kernelVersion(p string) string {
	b := path.Base(p)
	if v, ok := strings.CutPrefix(b, "vmlinuz-"); ok {
		return v
	}
	return ""
}

func onlyModulesDir(fsys fs.FS) string {
	ents, err := fs.ReadDir(fsys, "lib/modules")
	if err != nil {
		return ""
	}
	var dirs []string
	for _, e := range ents {
		if fi, err := fs.Stat(fsys, "lib/modules/"+e.Name()); err == nil && fi.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) != 1 {
		return ""
	}
	return dirs[0]
}

// compareVersions compares kernel versions: runs of digits numerically,
// other runs bytewise; "~" sorts before anything, as in Debian.
func compareVersions(a, b string) int {
	for a != "" || b != "" {
		da, ra := splitRun(a)
		db, rb := splitRun(b)
		if c := compareRun(da, db); c != 0 {
			return c
		}
		a, b = ra, rb
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// splitRun returns the leading run of digits or of non-digits of s.
func splitRun(s string) (string, string) {
	if s == "" {
		return "", ""
	}
	d := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == d {
		i++
	}
	return s[:i], s[i:]
}

func compareRun(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		if strings.HasPrefix(b, "~") {
			return 1
		}
		return -1
	case b == "":
		if strings.HasPrefix(a, "~") {
			return -1
		}
		return 1
	}
	if isDigit(a[0]) && isDigit(b[0]) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	}
	if isDigit(a[0]) != isDigit(b[0]) { // digits sort after letters/punctuation
		if isDigit(a[0]) {
			return 1
		}
		return -1
	}
	ta, tb := strings.HasPrefix(a, "~"), strings.HasPrefix(b, "~")
	if ta != tb {
		if ta {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}
