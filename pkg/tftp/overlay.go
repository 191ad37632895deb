package tftp

import (
	"errors"
	"io/fs"
)

// Overlay returns a read-only fs.FS that looks each name up in layers in
// order: the first layer that has the name (Open succeeds, or fails with an
// error other than fs.ErrNotExist) wins, so a file in an earlier layer
// shadows the same name in later ones. Nil layers are skipped. Directories are
// not merged: opening a directory yields the first layer's directory only.
// Names that are not fs.ValidPath fail with fs.ErrInvalid without reaching any
// layer.
//
// Typical use is Overlay(os.DirFS-like asset folder, firmware.FS()) to let an
// operator override or add files next to the embedded iPXE binaries. Prefer
// (*os.Root).FS() over os.DirFS for folders: it refuses symlinks that lead out
// of the folder, which os.DirFS follows.
func Overlay(layers ...fs.FS) fs.FS {
	o := overlay{}
	for _, l := range layers {
		if l != nil {
			o.layers = append(o.layers, l)
		}
	}
	return o
}

type overlay struct{ layers []fs.FS }

// Open implements fs.FS.
func (o overlay) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	for _, l := range o.layers {
		f, err := l.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return f, err
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// Stat implements fs.StatFS with the same first-layer-wins rule as Open.
func (o overlay) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrInvalid}
	}
	for _, l := range o.layers {
		fi, err := fs.Stat(l, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return fi, err
	}
	return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
}
