package squashfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"time"
)

// FS is an opened squashfs image. It implements fs.FS, fs.ReadDirFS,
// fs.StatFS and fs.ReadLinkFS. Names are slash-separated paths relative to
// the image root, as fs.ValidPath defines them. Open, Stat and ReadDir
// follow symbolic links in every component, relative and absolute ones
// (an absolute target is resolved from the image root; ".." never climbs
// above it), up to 40 links per call (then ErrSymlinkLoop); Lstat and
// ReadLink follow them in every component but the last. A directory that
// is its own ancestor (only a corrupt image has one) gives ErrCorrupt, so
// fs.WalkDir always ends. Errors are *fs.PathError. An FS is safe for
// concurrent use; it holds no goroutines or descriptors, so it needs no
// Close.
type FS struct {
	r        io.ReaderAt
	sb       superblock
	dec      decompressor
	ids      []uint32
	fragPtrs []uint64
	root     *inode

	meta  *lru[*metaBlock]
	frags *lru[[]byte]
	dirs  *lru[[]dirent]
}

var (
	_ fs.FS         = (*FS)(nil)
	_ fs.ReadDirFS  = (*FS)(nil)
	_ fs.StatFS     = (*FS)(nil)
	_ fs.ReadLinkFS = (*FS)(nil)
)

var errNotDir = errors.New("not a directory")

const (
	maxLinks = 40
	maxDepth = 2048 // path components; PATH_MAX allows no more
)

// resolve walks name from the root. It returns the inode, its canonical
// path (symlinks resolved, "." for the root) and its base name.
func (f *FS) resolve(name string, followLast bool) (*inode, string, error) {
	if name == "." {
		return f.root, ".", nil
	}
	type frame struct {
		in   *inode
		name string
	}
	stack := []frame{{in: f.root}}
	todo := strings.Split(name, "/")
	slices.Reverse(todo) // a stack: the next component is last
	links := 0
	for len(todo) > 0 {
		c := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		top := stack[len(stack)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if top.in.typ != typeDir {
				return nil, "", errNotDir
			}
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if top.in.typ != typeDir {
			return nil, "", errNotDir
		}
		ent, ok, err := f.lookup(top.in, c)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			return nil, "", fs.ErrNotExist
		}
		in, err := f.inode(ent.ref)
		if err != nil {
			return nil, "", err
		}
		if in.typ != ent.typ {
			return nil, "", fmt.Errorf("%w: entry %q has type %d, its inode type %d", ErrCorrupt, c, ent.typ, in.typ)
		}
		if in.typ == typeSymlink && (len(todo) > 0 || followLast) {
			if links++; links > maxLinks {
				return nil, "", ErrSymlinkLoop
			}
			if strings.HasPrefix(in.target, "/") {
				stack = stack[:1]
			}
			parts := strings.Split(in.target, "/")
			slices.Reverse(parts)
			todo = append(todo, parts...)
			continue
		}
		if len(stack) > maxDepth {
			return nil, "", fmt.Errorf("%w: path deeper than %d components", ErrCorrupt, maxDepth)
		}
		if in.typ == typeDir {
			// A directory that is its own ancestor exists only in a
			// corrupt image; refusing it keeps walks finite.
			for _, fr := range stack {
				if fr.in.ref == in.ref {
					return nil, "", fmt.Errorf("%w: directory loop at %q", ErrCorrupt, c)
				}
			}
		}
		stack = append(stack, frame{in: in, name: c})
	}
	if len(stack) == 1 {
		return f.root, ".", nil
	}
	names := make([]string, 0, len(stack)-1)
	for _, fr := range stack[1:] {
		names = append(names, fr.name)
	}
	return stack[len(stack)-1].in, strings.Join(names, "/"), nil
}

func (f *FS) resolveOp(op, name string, followLast bool) (*inode, string, error) {
	if !fs.ValidPath(name) {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	in, p, err := f.resolve(name, followLast)
	if err != nil {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: err}
	}
	return in, p, nil
}

func baseName(name string) string {
	if name == "." {
		return "."
	}
	return name[strings.LastIndexByte(name, '/')+1:]
}

// Open opens the named file, following symbolic links. A directory's
// fs.File implements fs.ReadDirFile; a regular file's implements io.Reader,
// io.ReaderAt and io.Seeker. Reading a device, fifo or socket fails.
func (f *FS) Open(name string) (fs.File, error) {
	in, _, err := f.resolveOp("open", name, true)
	if err != nil {
		return nil, err
	}
	fi := fileInfo{name: baseName(name), in: in}
	switch in.typ {
	case typeDir:
		ents, err := f.readDir(in)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &dirFile{fsys: f, info: fi, ents: ents}, nil
	case typeFile:
		return newFile(f, name, fi), nil
	}
	return &specialFile{info: fi, path: name}, nil
}

// ReadDir returns the entries of the named directory (symbolic links
// followed), sorted by name. Entries that are symbolic links are reported
// as such (not followed).
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	in, _, err := f.resolveOp("readdir", name, true)
	if err != nil {
		return nil, err
	}
	ents, err := f.readDir(in)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = dirEntry{fsys: f, d: e}
	}
	return out, nil
}

// Stat describes the named file, following symbolic links.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	in, _, err := f.resolveOp("stat", name, true)
	if err != nil {
		return nil, err
	}
	return fileInfo{name: baseName(name), in: in}, nil
}

// Lstat describes the named file without following a final symbolic link.
func (f *FS) Lstat(name string) (fs.FileInfo, error) {
	in, _, err := f.resolveOp("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return fileInfo{name: baseName(name), in: in}, nil
}

// ReadLink returns the target of the named symbolic link as stored (it may
// be absolute or relative). It fails with fs.ErrInvalid for other files.
func (f *FS) ReadLink(name string) (string, error) {
	in, _, err := f.resolveOp("readlink", name, false)
	if err != nil {
		return "", err
	}
	if in.typ != typeSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return in.target, nil
}

// Realpath returns the canonical path of name inside the image: every
// symbolic link resolved, "." for the root.
func (f *FS) Realpath(name string) (string, error) {
	_, p, err := f.resolveOp("realpath", name, true)
	return p, err
}

// InodeInfo is what the Sys method of this package's fs.FileInfo values
// returns: the inode facts fs.FileInfo has no field for.
type InodeInfo struct {
	Ino   uint32 // inode number
	Nlink uint32 // link count
	UID   uint32
	GID   uint32
	Rdev  uint32 // device number of block and character devices (Linux encoding)
}

// Major returns the major number of a device.
func (i *InodeInfo) Major() uint32 { return (i.Rdev & 0xFFF00) >> 8 }

// Minor returns the minor number of a device.
func (i *InodeInfo) Minor() uint32 { return i.Rdev&0xFF | (i.Rdev>>12)&0xFFF00 }

type fileInfo struct {
	name string
	in   *inode
}

func (fi fileInfo) Name() string       { return fi.name }
func (fi fileInfo) Size() int64        { return fi.in.size }
func (fi fileInfo) Mode() fs.FileMode  { return fi.in.mode() }
func (fi fileInfo) ModTime() time.Time { return time.Unix(int64(fi.in.mtime), 0) }
func (fi fileInfo) IsDir() bool        { return fi.in.typ == typeDir }
func (fi fileInfo) Sys() any {
	return &InodeInfo{Ino: fi.in.ino, Nlink: fi.in.nlink, UID: fi.in.uid, GID: fi.in.gid, Rdev: fi.in.rdev}
}

type dirEntry struct {
	fsys *FS
	d    dirent
}

func (e dirEntry) Name() string      { return e.d.name }
func (e dirEntry) IsDir() bool       { return e.d.typ == typeDir }
func (e dirEntry) Type() fs.FileMode { return typeMode(e.d.typ) }
func (e dirEntry) String() string    { return fs.FormatDirEntry(e) }
func (e dirEntry) Info() (fs.FileInfo, error) {
	in, err := e.fsys.inode(e.d.ref)
	if err != nil {
		return nil, err
	}
	return fileInfo{name: e.d.name, in: in}, nil
}

// dirFile is an opened directory.
type dirFile struct {
	fsys *FS
	info fileInfo
	ents []dirent
	pos  int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Close() error               { return nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}

func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.ents[d.pos:]
	if n > 0 && len(rest) == 0 {
		return nil, io.EOF
	}
	if n > 0 && n < len(rest) {
		rest = rest[:n]
	}
	d.pos += len(rest)
	out := make([]fs.DirEntry, len(rest))
	for i, e := range rest {
		out[i] = dirEntry{fsys: d.fsys, d: e}
	}
	return out, nil
}

// specialFile is an opened device, fifo or socket: it can be stat'ed only.
type specialFile struct {
	info fileInfo
	path string
}

func (s *specialFile) Stat() (fs.FileInfo, error) { return s.info, nil }
func (s *specialFile) Close() error               { return nil }
func (s *specialFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: s.path, Err: errors.New("not a regular file")}
}
