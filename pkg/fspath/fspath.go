// Package fspath resolves symbolic links inside an io/fs file system, the
// way a chroot would: absolute targets start at the file system's root and
// ".." never leaves it. Image trees (a squashfs, an unpacked rootfs) are read
// through it so that a link such as lib -> /usr/lib never reaches the host.
package fspath

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
)

// MaxLinks bounds the links followed in one resolution, like the kernel's
// ELOOP limit.
const MaxLinks = 40

// ErrLoop means a path needed more than MaxLinks links.
var ErrLoop = errors.New("too many levels of symbolic links")

// Realpath returns name with every symbolic link in it resolved ("." for
// the root). A file system with its own Realpath method is asked directly;
// one without fs.ReadLinkFS has no links, and name is only checked to exist.
func Realpath(fsys fs.FS, name string) (string, error) {
	if rp, ok := fsys.(interface{ Realpath(string) (string, error) }); ok {
		return rp.Realpath(name)
	}
	if _, ok := fsys.(fs.ReadLinkFS); !ok {
		if _, err := fs.Stat(fsys, name); err != nil {
			return "", err
		}
		return name, nil
	}
	var done []string
	todo := strings.Split(name, "/")
	slices.Reverse(todo)
	links := 0
	for len(todo) > 0 {
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		p := strings.Join(append(done, c), "/")
		fi, err := fs.Lstat(fsys, p)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		if links++; links > MaxLinks {
			return "", &fs.PathError{Op: "realpath", Path: name, Err: ErrLoop}
		}
		t, err := fs.ReadLink(fsys, p)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(t, "/") {
			done = done[:0]
		}
		parts := strings.Split(t, "/")
		slices.Reverse(parts)
		todo = append(todo, parts...)
	}
	if len(done) == 0 {
		return ".", nil
	}
	return strings.Join(done, "/"), nil
}

// ReadFile reads name after resolving the links in it.
func ReadFile(fsys fs.FS, name string) ([]byte, error) {
	p, err := Realpath(fsys, name)
	if err != nil {
		return nil, err
	}
	return fs.ReadFile(fsys, p)
}
