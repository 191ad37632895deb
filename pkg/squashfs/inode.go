package squashfs

import (
	"fmt"
	"io/fs"
	"math"
)

// Basic inode types; an extended type is the basic one plus 7.
const (
	typeDir     = 1
	typeFile    = 2
	typeSymlink = 3
	typeBlock   = 4
	typeChar    = 5
	typeFifo    = 6
	typeSocket  = 7
)

// maxSymlink bounds a symlink target (Linux's PATH_MAX).
const maxSymlink = 4096

// inode is a decoded inode of any type.
type inode struct {
	ref   uint64
	typ   uint8 // basic type
	ext   bool  // stored as an extended inode
	perm  uint16
	uid   uint32
	gid   uint32
	mtime uint32
	ino   uint32
	nlink uint32
	size  int64

	// directories
	dirPos  metaPos // start of the listing in the directory table
	dirSize uint32  // bytes of listing
	parent  uint32

	// regular files
	blocksStart uint64
	frag        uint32
	fragOff     uint32
	listPos     metaPos // start of the block size list in the inode table
	nblocks     uint64

	// symlinks
	target string

	// devices
	rdev uint32
}

// typeMode maps a basic inode type to the fs.FileMode type bits.
func typeMode(t uint8) fs.FileMode {
	switch t {
	case typeDir:
		return fs.ModeDir
	case typeSymlink:
		return fs.ModeSymlink
	case typeBlock:
		return fs.ModeDevice
	case typeChar:
		return fs.ModeDevice | fs.ModeCharDevice
	case typeFifo:
		return fs.ModeNamedPipe
	case typeSocket:
		return fs.ModeSocket
	}
	return 0
}

func (in *inode) mode() fs.FileMode {
	m := fs.FileMode(in.perm&0o777) | typeMode(in.typ)
	if in.perm&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if in.perm&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if in.perm&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func (f *FS) id(i uint16) (uint32, error) {
	if int(i) >= len(f.ids) {
		return 0, fmt.Errorf("%w: id index %d of %d", ErrCorrupt, i, len(f.ids))
	}
	return f.ids[i], nil
}

// inode reads the inode that ref (block offset << 16 | byte offset)
// designates.
func (f *FS) inode(ref uint64) (*inode, error) {
	sb := &f.sb
	blk, off := ref>>16, int(ref&0xFFFF)
	if blk >= sb.dirTable-sb.inodeTable || off >= metaBlockSize {
		return nil, fmt.Errorf("%w: inode reference %#x out of bounds", ErrCorrupt, ref)
	}
	m := metaReader{f: f, pos: metaPos{block: sb.inodeTable + blk, off: off}, limit: sb.dirTable}
	t := m.u16()
	in := &inode{ref: ref, perm: m.u16()}
	uidx, gidx := m.u16(), m.u16()
	in.mtime = m.u32()
	in.ino = m.u32()
	if m.err != nil {
		return nil, fmt.Errorf("inode %#x: %w", ref, m.err)
	}
	if t < 1 || t > 14 {
		return nil, fmt.Errorf("%w: inode %#x has unknown type %d", ErrCorrupt, ref, t)
	}
	ext := t > 7
	in.ext = ext
	in.typ = uint8(t)
	if ext {
		in.typ -= 7
	}
	var err error
	if in.uid, err = f.id(uidx); err != nil {
		return nil, err
	}
	if in.gid, err = f.id(gidx); err != nil {
		return nil, err
	}
	switch in.typ {
	case typeDir:
		var start uint32
		var size uint32
		var off uint16
		if !ext {
			start = m.u32()
			in.nlink = m.u32()
			size = uint32(m.u16())
			off = m.u16()
			in.parent = m.u32()
		} else {
			in.nlink = m.u32()
			size = m.u32()
			start = m.u32()
			in.parent = m.u32()
			_ = m.u16() // index count: the index only speeds up lookups
			off = m.u16()
			_ = m.u32() // xattr
		}
		if m.err == nil {
			if size < 3 {
				return nil, fmt.Errorf("%w: directory inode %#x has size %d", ErrCorrupt, ref, size)
			}
			if uint64(start) >= sb.dirTableEnd()-sb.dirTable || off >= metaBlockSize {
				return nil, fmt.Errorf("%w: directory inode %#x points outside the directory table", ErrCorrupt, ref)
			}
			in.dirSize = size - 3
			in.size = int64(size)
			in.dirPos = metaPos{block: sb.dirTable + uint64(start), off: int(off)}
		}
	case typeFile:
		var size uint64
		if !ext {
			in.blocksStart = uint64(m.u32())
			in.frag = m.u32()
			in.fragOff = m.u32()
			size = uint64(m.u32())
			in.nlink = 1
		} else {
			in.blocksStart = m.u64()
			size = m.u64()
			_ = m.u64() // sparse bytes
			in.nlink = m.u32()
			in.frag = m.u32()
			in.fragOff = m.u32()
			_ = m.u32() // xattr
		}
		if m.err == nil {
			if size > math.MaxInt64 {
				return nil, fmt.Errorf("%w: file inode %#x has size %d", ErrCorrupt, ref, size)
			}
			in.size = int64(size)
			bs := uint64(sb.blockSize)
			in.nblocks = size / bs
			if in.frag == noFragment {
				in.nblocks = (size + bs - 1) / bs
			} else {
				if in.frag >= sb.fragCount {
					return nil, fmt.Errorf("%w: file inode %#x uses fragment %d of %d", ErrCorrupt, ref, in.frag, sb.fragCount)
				}
				if uint64(in.fragOff)+size%bs > bs {
					return nil, fmt.Errorf("%w: file inode %#x has its tail beyond its fragment block", ErrCorrupt, ref)
				}
			}
			if in.blocksStart > sb.bytesUsed {
				return nil, fmt.Errorf("%w: file inode %#x has data at %d", ErrCorrupt, ref, in.blocksStart)
			}
			in.listPos = m.pos
		}
	case typeSymlink:
		in.nlink = m.u32()
		n := m.u32()
		if m.err == nil {
			if n == 0 || n > maxSymlink {
				return nil, fmt.Errorf("%w: symlink inode %#x has a target of %d bytes", ErrCorrupt, ref, n)
			}
			in.target = string(m.bytes(int(n)))
			in.size = int64(n)
		}
	case typeBlock, typeChar:
		in.nlink = m.u32()
		in.rdev = m.u32()
	case typeFifo, typeSocket:
		in.nlink = m.u32()
	}
	if m.err != nil {
		return nil, fmt.Errorf("inode %#x: %w", ref, m.err)
	}
	return in, nil
}
