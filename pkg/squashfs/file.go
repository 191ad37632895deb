package squashfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
)

const (
	blockUncompressed = 1 << 24
	blockSizeMask     = blockUncompressed - 1
	chunkBlocks       = 1024 // block list entries held in memory at a time
)

// file is an opened regular file. Its block list is read from the inode
// table in chunks of chunkBlocks entries; a checkpoint per chunk (metadata
// position and image offset of its first block) makes seeking cheap without
// holding a whole list, whose length a corrupt image could inflate.
type file struct {
	fsys *FS
	info fileInfo
	path string

	mu     sync.Mutex
	off    int64 // for Read and Seek
	closed bool

	ckpts    []checkpoint // ckpts[k]: start of chunk k
	chunk    int64        // index of the loaded chunk, -1 for none
	sizes    []uint32     // size words of the loaded chunk
	offs     []uint64     // image offsets of the loaded chunk's blocks
	bufBlock int64        // index of the block in buf, -1 for none
	buf      []byte
	raw      []byte // compressed bytes of the block being read
}

type checkpoint struct {
	pos  metaPos
	disk uint64
}

func newFile(f *FS, path string, fi fileInfo) *file {
	return &file{
		fsys: f, info: fi, path: path,
		ckpts:    []checkpoint{{pos: fi.in.listPos, disk: fi.in.blocksStart}},
		chunk:    -1,
		bufBlock: -1,
	}
}

var errClosed = errors.New("file already closed")

func (fl *file) Stat() (fs.FileInfo, error) { return fl.info, nil }

func (fl *file) Close() error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed {
		return &fs.PathError{Op: "close", Path: fl.path, Err: fs.ErrClosed}
	}
	fl.closed = true
	fl.buf, fl.raw, fl.sizes, fl.offs = nil, nil, nil, nil
	return nil
}

func (fl *file) Read(p []byte) (int, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	n, err := fl.readAt(p, fl.off, "read")
	fl.off += int64(n)
	return n, err
}

// ReadAt implements io.ReaderAt; it may be called concurrently.
func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.readAt(p, off, "readat")
}

func (fl *file) Seek(offset int64, whence int) (int64, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed {
		return 0, &fs.PathError{Op: "seek", Path: fl.path, Err: fs.ErrClosed}
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += fl.off
	case io.SeekEnd:
		offset += fl.info.in.size
	default:
		return 0, &fs.PathError{Op: "seek", Path: fl.path, Err: fs.ErrInvalid}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: fl.path, Err: fs.ErrInvalid}
	}
	fl.off = offset
	return offset, nil
}

func (fl *file) readAt(p []byte, off int64, op string) (int, error) {
	if fl.closed {
		return 0, &fs.PathError{Op: op, Path: fl.path, Err: fs.ErrClosed}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: op, Path: fl.path, Err: fs.ErrInvalid}
	}
	in := fl.info.in
	size := in.size
	if off >= size {
		return 0, io.EOF
	}
	bs := int64(fl.fsys.sb.blockSize)
	n := 0
	for len(p) > 0 && off < size {
		idx := off / bs
		within := int(off % bs)
		want := int(min(bs, size-idx*bs)) // bytes of this block
		var data []byte
		var err error
		if uint64(idx) < in.nblocks {
			data, err = fl.block(idx, want)
		} else {
			data, err = fl.tail(want)
		}
		if err != nil {
			return n, &fs.PathError{Op: op, Path: fl.path, Err: err}
		}
		var m int
		if data == nil { // sparse block
			m = min(len(p), want-within)
			clear(p[:m])
		} else {
			m = copy(p, data[within:])
		}
		p = p[m:]
		n += m
		off += int64(m)
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}

// locate returns the image offset and size word of block idx.
func (fl *file) locate(idx int64) (uint64, uint32, error) {
	k := idx / chunkBlocks
	for fl.chunk != k {
		next := min(k, int64(len(fl.ckpts)-1))
		if err := fl.loadChunk(next); err != nil {
			return 0, 0, err
		}
	}
	i := idx % chunkBlocks
	return fl.offs[i], fl.sizes[i], nil
}

// loadChunk reads chunk k of the block list; ckpts[k] must be known.
func (fl *file) loadChunk(k int64) error {
	f, in := fl.fsys, fl.info.in
	c := fl.ckpts[k]
	n := int(min(chunkBlocks, in.nblocks-uint64(k)*chunkBlocks))
	m := metaReader{f: f, pos: c.pos, limit: f.sb.dirTable}
	if fl.sizes == nil {
		fl.sizes = make([]uint32, chunkBlocks)
		fl.offs = make([]uint64, chunkBlocks)
	}
	disk := c.disk
	fl.chunk = -1
	for i := 0; i < n; i++ {
		w := m.u32()
		if m.err != nil {
			return fmt.Errorf("block list: %w", m.err)
		}
		sz := uint64(w & blockSizeMask)
		if w&^(blockUncompressed|blockSizeMask) != 0 || sz > uint64(f.sb.blockSize) || sz > f.sb.bytesUsed-disk {
			return fmt.Errorf("%w: block %d at %d of size %#x is out of bounds", ErrCorrupt, k*chunkBlocks+int64(i), disk, w)
		}
		fl.sizes[i], fl.offs[i] = w, disk
		disk += sz
	}
	if int64(len(fl.ckpts)) == k+1 && uint64(k+1)*chunkBlocks < in.nblocks {
		fl.ckpts = append(fl.ckpts, checkpoint{pos: m.pos, disk: disk})
	}
	fl.chunk = k
	return nil
}

// block returns the want bytes of data block idx, or nil for a sparse one.
func (fl *file) block(idx int64, want int) ([]byte, error) {
	if fl.bufBlock == idx {
		return fl.buf, nil
	}
	disk, w, err := fl.locate(idx)
	if err != nil {
		return nil, err
	}
	if w&blockSizeMask == 0 {
		return nil, nil
	}
	if fl.buf == nil {
		fl.buf = make([]byte, 0, fl.fsys.sb.blockSize)
		fl.raw = make([]byte, fl.fsys.sb.blockSize)
	}
	fl.bufBlock = -1
	data, err := fl.fsys.dataBlock(fl.buf[:0], fl.raw, disk, w)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", idx, err)
	}
	if len(data) != want {
		return nil, fmt.Errorf("%w: block %d holds %d bytes, want %d", ErrCorrupt, idx, len(data), want)
	}
	fl.buf, fl.bufBlock = data, idx
	return data, nil
}

// tail returns the file's last want bytes, stored in a fragment block.
func (fl *file) tail(want int) ([]byte, error) {
	in := fl.info.in
	if in.frag == noFragment {
		return nil, fmt.Errorf("%w: file has no fragment for its tail", ErrCorrupt)
	}
	frag, err := fl.fsys.fragmentBlock(in.frag)
	if err != nil {
		return nil, err
	}
	end := uint64(in.fragOff) + uint64(want)
	if end > uint64(len(frag)) {
		return nil, fmt.Errorf("%w: tail at %d+%d beyond fragment %d (%d bytes)", ErrCorrupt, in.fragOff, want, in.frag, len(frag))
	}
	return frag[in.fragOff:end], nil
}

// dataBlock reads the data block at disk with size word w into dst,
// using scratch (when it is large enough) for the compressed bytes.
func (f *FS) dataBlock(dst, scratch []byte, disk uint64, w uint32) ([]byte, error) {
	n := int(w & blockSizeMask)
	if n > int(f.sb.blockSize) {
		return nil, fmt.Errorf("%w: data block of %d bytes", ErrCorrupt, n)
	}
	if cap(scratch) < n {
		scratch = make([]byte, n)
	}
	raw, err := f.readAtInto(scratch[:n], disk)
	if err != nil {
		return nil, err
	}
	if w&blockUncompressed != 0 {
		return append(dst, raw...), nil
	}
	out, err := f.dec.decompress(dst, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: data block at %d: %w", ErrCorrupt, disk, err)
	}
	return out, nil
}

// fragmentBlock returns decompressed fragment block i (cached).
func (f *FS) fragmentBlock(i uint32) ([]byte, error) {
	start, w, err := f.fragment(i)
	if err != nil {
		return nil, err
	}
	if b, ok := f.frags.get(start); ok {
		return b, nil
	}
	if w&^(blockUncompressed|blockSizeMask) != 0 || w&blockSizeMask == 0 {
		return nil, fmt.Errorf("%w: fragment %d has size word %#x", ErrCorrupt, i, w)
	}
	b, err := f.dataBlock(make([]byte, 0, f.sb.blockSize), nil, start, w)
	if err != nil {
		return nil, fmt.Errorf("fragment %d: %w", i, err)
	}
	f.frags.put(start, b)
	return b, nil
}
