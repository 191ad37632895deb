package squashfs

import (
	"fmt"
	"slices"
	"strings"
)

// dirent is one entry of a directory listing.
type dirent struct {
	name string
	typ  uint8 // basic inode type
	ref  uint64
}

// maxDirHeaderEntries is the largest entry count a directory header has.
const maxDirHeaderEntries = 256

// readDir returns the entries of directory in, sorted by name. Listings
// are cached.
func (f *FS) readDir(in *inode) ([]dirent, error) {
	if in.typ != typeDir {
		return nil, errNotDir
	}
	if ents, ok := f.dirs.get(in.ref); ok {
		return ents, nil
	}
	m := metaReader{f: f, pos: in.dirPos, limit: f.sb.dirTableEnd()}
	var ents []dirent
	left := int64(in.dirSize)
	for left > 0 {
		if left < 12 {
			return nil, fmt.Errorf("%w: directory %#x: %d stray bytes in listing", ErrCorrupt, in.ref, left)
		}
		count := m.u32()
		start := m.u32()
		_ = m.u32() // base inode number
		left -= 12
		if m.err != nil {
			return nil, fmt.Errorf("directory %#x: %w", in.ref, m.err)
		}
		if count >= maxDirHeaderEntries {
			return nil, fmt.Errorf("%w: directory %#x: header of %d entries", ErrCorrupt, in.ref, uint64(count)+1)
		}
		if uint64(start) >= f.sb.dirTable-f.sb.inodeTable {
			return nil, fmt.Errorf("%w: directory %#x: inode block %d out of bounds", ErrCorrupt, in.ref, start)
		}
		for i := uint32(0); i <= count; i++ {
			if left < 8 {
				return nil, fmt.Errorf("%w: directory %#x: listing ends inside an entry", ErrCorrupt, in.ref)
			}
			off := m.u16()
			_ = m.u16() // inode number delta
			t := m.u16()
			n := int(m.u16()) + 1
			left -= 8
			if m.err != nil {
				return nil, fmt.Errorf("directory %#x: %w", in.ref, m.err)
			}
			if int64(n) > left || n > 256 {
				return nil, fmt.Errorf("%w: directory %#x: name of %d bytes", ErrCorrupt, in.ref, n)
			}
			name := string(m.bytes(n))
			left -= int64(n)
			if m.err != nil {
				return nil, fmt.Errorf("directory %#x: %w", in.ref, m.err)
			}
			if off >= metaBlockSize || t < 1 || t > 14 {
				return nil, fmt.Errorf("%w: directory %#x: bad entry %q", ErrCorrupt, in.ref, name)
			}
			if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
				return nil, fmt.Errorf("%w: directory %#x: bad name %q", ErrCorrupt, in.ref, name)
			}
			if t > 7 {
				t -= 7
			}
			ents = append(ents, dirent{name: name, typ: uint8(t), ref: uint64(start)<<16 | uint64(off)})
			if uint64(len(ents)) > uint64(f.sb.inodes) {
				return nil, fmt.Errorf("%w: directory %#x has more entries than the image has inodes", ErrCorrupt, in.ref)
			}
		}
	}
	cmp := func(a, b dirent) int { return strings.Compare(a.name, b.name) }
	if !slices.IsSortedFunc(ents, cmp) {
		slices.SortFunc(ents, cmp)
	}
	for i := 1; i < len(ents); i++ {
		if ents[i].name == ents[i-1].name {
			return nil, fmt.Errorf("%w: directory %#x: duplicate name %q", ErrCorrupt, in.ref, ents[i].name)
		}
	}
	f.dirs.put(in.ref, ents)
	return ents, nil
}

// lookup finds name in directory in.
func (f *FS) lookup(in *inode, name string) (dirent, bool, error) {
	ents, err := f.readDir(in)
	if err != nil {
		return dirent{}, false, err
	}
	i, ok := slices.BinarySearchFunc(ents, name, func(e dirent, n string) int { return strings.Compare(e.name, n) })
	if !ok {
		return dirent{}, false, nil
	}
	return ents[i], true, nil
}
