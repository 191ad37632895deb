// Package squashfs is a read-only reader for squashfs 4.0 images, the format
// of kiln's OS images.
//
// Open validates an image reached through an io.ReaderAt and returns an *FS
// that implements io/fs.FS, fs.ReadDirFS, fs.StatFS and fs.ReadLinkFS, so that
// fs.WalkDir, fs.ReadFile and fs.Glob work on it. The image is untrusted
// input: every length read from it is checked against the image size or the
// block size before it is used, corrupt images give errors wrapping
// ErrCorrupt, and nothing panics. Data is read on demand; only a few
// metadata blocks, fragment blocks and directory listings are cached.
//
// Supported: gzip (zlib), xz (LZMA2 without BCJ filters), lzma, lz4 and zstd
// compression, uncompressed inodes, data and fragments, fragments and tail-end
// packing, sparse files, basic and extended inodes of every type. Not
// supported: lzo compression and xz BCJ filters (ErrUnsupported); extended
// attributes and the NFS export table are ignored. Squashfs has no checksums
// of its own and the CRC closing an xz block is not checked either: integrity
// is the image digest's job (kiln verifies a blob's sha256 before opening it).
package squashfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Sentinel errors, matched with errors.Is. Errors returned by this package
// wrap one of them (or one of io/fs's: fs.ErrNotExist, fs.ErrInvalid).
var (
	// ErrNotSquashfs means the input is not a squashfs image: too short,
	// wrong magic, or a superblock that no squashfs writer produces.
	ErrNotSquashfs = errors.New("squashfs: not a squashfs 4.0 image")
	// ErrUnsupported means a valid squashfs uses a feature this reader
	// does not implement; the wrapping error names the feature.
	ErrUnsupported = errors.New("squashfs: unsupported feature")
	// ErrCorrupt means the image is a squashfs but its contents are
	// inconsistent or truncated.
	ErrCorrupt = errors.New("squashfs: corrupt image")
	// ErrSymlinkLoop means resolving a path followed more than 40
	// symbolic links.
	ErrSymlinkLoop = errors.New("squashfs: too many levels of symbolic links")
	// ErrNoKernel is returned by FindKernel when the image has no kernel.
	ErrNoKernel = errors.New("squashfs: no kernel found")
)

// Compression identifies the compressor of an image (the superblock's id).
type Compression uint16

// The compressors of squashfs 4.0.
const (
	Gzip Compression = 1
	LZMA Compression = 2
	LZO  Compression = 3
	XZ   Compression = 4
	LZ4  Compression = 5
	Zstd Compression = 6
)

// String returns mksquashfs's name for the compressor.
func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case LZMA:
		return "lzma"
	case LZO:
		return "lzo"
	case XZ:
		return "xz"
	case LZ4:
		return "lz4"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("compressor(%d)", uint16(c))
}

// Info describes an opened image, as read from its superblock.
type Info struct {
	Compression Compression
	BlockSize   uint32    // data block size in bytes (4 KiB .. 1 MiB)
	Inodes      uint32    // number of inodes
	Fragments   uint32    // number of fragment blocks
	BytesUsed   int64     // size of the filesystem; the input may be longer
	ModTime     time.Time // creation time of the image
}

const (
	magic          = 0x73717368 // "hsqs" little-endian
	superblockSize = 96
	metaBlockSize  = 8192 // uncompressed size of a metadata block
	noFragment     = 0xFFFFFFFF
	tableAbsent    = ^uint64(0)
	minBlockLog    = 12
	maxBlockLog    = 20

	flagCompressorOptions = 0x0400
)

type superblock struct {
	inodes, modTime, blockSize, fragCount uint32
	comp, blockLog, flags, idCount        uint16
	major, minor                          uint16
	rootRef, bytesUsed                    uint64
	idTable, xattrTable                   uint64
	inodeTable, dirTable                  uint64
	fragTable, exportTable                uint64
}

func parseSuperblock(b []byte) superblock {
	le := binary.LittleEndian
	return superblock{
		inodes:      le.Uint32(b[4:]),
		modTime:     le.Uint32(b[8:]),
		blockSize:   le.Uint32(b[12:]),
		fragCount:   le.Uint32(b[16:]),
		comp:        le.Uint16(b[20:]),
		blockLog:    le.Uint16(b[22:]),
		flags:       le.Uint16(b[24:]),
		idCount:     le.Uint16(b[26:]),
		major:       le.Uint16(b[28:]),
		minor:       le.Uint16(b[30:]),
		rootRef:     le.Uint64(b[32:]),
		bytesUsed:   le.Uint64(b[40:]),
		idTable:     le.Uint64(b[48:]),
		xattrTable:  le.Uint64(b[56:]),
		inodeTable:  le.Uint64(b[64:]),
		dirTable:    le.Uint64(b[72:]),
		fragTable:   le.Uint64(b[80:]),
		exportTable: le.Uint64(b[88:]),
	}
}

// validate checks the superblock of an image of size bytes.
func (sb *superblock) validate(size int64) error {
	if sb.major != 4 || sb.minor != 0 {
		if sb.major >= 1 && sb.major <= 3 {
			return fmt.Errorf("%w: squashfs version %d.%d (only 4.0 is read)", ErrUnsupported, sb.major, sb.minor)
		}
		return fmt.Errorf("%w: bad version %d.%d", ErrNotSquashfs, sb.major, sb.minor)
	}
	if sb.blockLog < minBlockLog || sb.blockLog > maxBlockLog || sb.blockSize != 1<<sb.blockLog {
		return fmt.Errorf("%w: bad block size %d (log %d)", ErrNotSquashfs, sb.blockSize, sb.blockLog)
	}
	switch Compression(sb.comp) {
	case Gzip, LZMA, XZ, LZ4, Zstd:
	case LZO:
		return fmt.Errorf("%w: lzo compression", ErrUnsupported)
	default:
		return fmt.Errorf("%w: unknown compressor id %d", ErrNotSquashfs, sb.comp)
	}
	if sb.bytesUsed < superblockSize {
		return fmt.Errorf("%w: bytes used %d is smaller than the superblock", ErrNotSquashfs, sb.bytesUsed)
	}
	if sb.bytesUsed > uint64(size) {
		return fmt.Errorf("%w: truncated image: superblock says %d bytes, input has %d", ErrCorrupt, sb.bytesUsed, size)
	}
	if sb.inodeTable < superblockSize || sb.inodeTable >= sb.dirTable || sb.dirTable >= sb.bytesUsed {
		return fmt.Errorf("%w: inode table %d / directory table %d out of bounds (%d bytes used)",
			ErrNotSquashfs, sb.inodeTable, sb.dirTable, sb.bytesUsed)
	}
	if sb.idCount == 0 || sb.idTable >= sb.bytesUsed || sb.idTable < sb.dirTable {
		return fmt.Errorf("%w: id table at %d with %d ids out of bounds", ErrNotSquashfs, sb.idTable, sb.idCount)
	}
	if sb.fragCount > 0 && (sb.fragTable >= sb.bytesUsed || sb.fragTable < sb.dirTable) {
		return fmt.Errorf("%w: fragment table at %d out of bounds", ErrNotSquashfs, sb.fragTable)
	}
	if sb.inodes == 0 {
		return fmt.Errorf("%w: zero inodes", ErrNotSquashfs)
	}
	if sb.rootRef>>16 >= sb.dirTable-sb.inodeTable || sb.rootRef&0xFFFF >= metaBlockSize {
		return fmt.Errorf("%w: root inode reference %#x out of bounds", ErrNotSquashfs, sb.rootRef)
	}
	return nil
}

// dirTableEnd is an upper bound for the end of the directory table: the
// start of the next table after it.
func (sb *superblock) dirTableEnd() uint64 {
	end := sb.bytesUsed
	for _, t := range []uint64{sb.fragTable, sb.exportTable, sb.idTable, sb.xattrTable} {
		if t != tableAbsent && t > sb.dirTable && t < end {
			end = t
		}
	}
	return end
}

// readAt reads exactly n bytes at off, all of which must lie in the image.
func (f *FS) readAt(off uint64, n int) ([]byte, error) {
	if n < 0 || off > f.sb.bytesUsed || uint64(n) > f.sb.bytesUsed-off {
		return nil, fmt.Errorf("%w: read of %d bytes at %d beyond the image end %d", ErrCorrupt, n, off, f.sb.bytesUsed)
	}
	return f.readAtInto(make([]byte, n), off)
}

// readAtInto fills b from off; the range must lie in the image.
func (f *FS) readAtInto(b []byte, off uint64) ([]byte, error) {
	n := len(b)
	if off > f.sb.bytesUsed || uint64(n) > f.sb.bytesUsed-off {
		return nil, fmt.Errorf("%w: read of %d bytes at %d beyond the image end %d", ErrCorrupt, n, off, f.sb.bytesUsed)
	}
	m, err := f.r.ReadAt(b, int64(off))
	if m == n {
		return b, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("squashfs: reading %d bytes at %d: %w", n, off, err)
}

// Open reads and validates the superblock and the tables of the squashfs
// image of size bytes that r gives access to, and returns the filesystem.
// r must stay readable as long as the FS is used; the FS never writes to it
// and never reads it beyond size. The FS is safe for concurrent use when r is.
// An input that is not a squashfs gives an error wrapping ErrNotSquashfs; a
// squashfs using an unsupported feature (lzo, xz BCJ filters, an old
// version) one wrapping ErrUnsupported; a truncated or inconsistent one an
// error wrapping ErrCorrupt.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if r == nil {
		return nil, fmt.Errorf("squashfs: open: nil reader")
	}
	if size < superblockSize {
		return nil, fmt.Errorf("%w: input is %d bytes, shorter than a superblock", ErrNotSquashfs, size)
	}
	b := make([]byte, superblockSize)
	if n, err := r.ReadAt(b, 0); n != superblockSize {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("squashfs: reading the superblock: %w", err)
	}
	if binary.LittleEndian.Uint32(b) != magic {
		if binary.BigEndian.Uint32(b) == magic {
			return nil, fmt.Errorf("%w: big-endian squashfs (version 3 or older)", ErrUnsupported)
		}
		return nil, fmt.Errorf("%w: bad magic %#x", ErrNotSquashfs, b[:4])
	}
	sb := parseSuperblock(b)
	if err := sb.validate(size); err != nil {
		return nil, err
	}
	f := &FS{r: r, sb: sb}
	f.meta = newLRU[*metaBlock](64)
	f.frags = newLRU[[]byte](8)
	f.dirs = newLRU[[]dirent](32)
	var opts []byte
	if sb.flags&flagCompressorOptions != 0 {
		h, err := f.readAt(superblockSize, 2)
		if err != nil {
			return nil, fmt.Errorf("compressor options: %w", err)
		}
		word := binary.LittleEndian.Uint16(h)
		n := uint64(word & 0x7FFF)
		// Writers store the options uncompressed; none needs more than 64 bytes.
		if word&0x8000 == 0 || n == 0 || n > 64 || superblockSize+2+n > sb.inodeTable {
			return nil, fmt.Errorf("%w: bad compressor options header %#x", ErrCorrupt, word)
		}
		if opts, err = f.readAt(superblockSize+2, int(n)); err != nil {
			return nil, fmt.Errorf("compressor options: %w", err)
		}
	}
	dec, err := newDecompressor(Compression(sb.comp), opts, int(sb.blockSize))
	if err != nil {
		return nil, err
	}
	f.dec = dec
	if err := f.loadIDs(); err != nil {
		return nil, err
	}
	if err := f.loadFragmentIndex(); err != nil {
		return nil, err
	}
	root, err := f.inode(sb.rootRef)
	if err != nil {
		return nil, fmt.Errorf("root inode: %w", err)
	}
	if root.typ != typeDir {
		return nil, fmt.Errorf("%w: root inode is not a directory", ErrCorrupt)
	}
	f.root = root
	return f, nil
}

// Info returns the image's superblock facts.
func (f *FS) Info() Info {
	return Info{
		Compression: Compression(f.sb.comp),
		BlockSize:   f.sb.blockSize,
		Inodes:      f.sb.inodes,
		Fragments:   f.sb.fragCount,
		BytesUsed:   int64(f.sb.bytesUsed),
		ModTime:     time.Unix(int64(f.sb.modTime), 0).UTC(),
	}
}

// lookupTable reads the array of count uint64 metadata block pointers at
// off; each must point before off (the metadata precedes its index).
func (f *FS) lookupTable(off uint64, count int, what string) ([]uint64, error) {
	b, err := f.readAt(off, count*8)
	if err != nil {
		return nil, fmt.Errorf("%s index: %w", what, err)
	}
	ptrs := make([]uint64, count)
	for i := range ptrs {
		ptrs[i] = binary.LittleEndian.Uint64(b[i*8:])
		if ptrs[i] >= off || ptrs[i] < superblockSize {
			return nil, fmt.Errorf("%w: %s block %d at %d out of bounds", ErrCorrupt, what, i, ptrs[i])
		}
	}
	return ptrs, nil
}

func (f *FS) loadIDs() error {
	n := int(f.sb.idCount)
	blocks := (n*4 + metaBlockSize - 1) / metaBlockSize
	ptrs, err := f.lookupTable(f.sb.idTable, blocks, "id table")
	if err != nil {
		return err
	}
	f.ids = make([]uint32, 0, n)
	for _, p := range ptrs {
		m := metaReader{f: f, pos: metaPos{block: p}, limit: f.sb.idTable}
		for i := 0; i < metaBlockSize/4 && len(f.ids) < n; i++ {
			f.ids = append(f.ids, m.u32())
		}
		if m.err != nil {
			return fmt.Errorf("id table: %w", m.err)
		}
	}
	return nil
}

const fragEntrySize = 16

func (f *FS) loadFragmentIndex() error {
	if f.sb.fragCount == 0 {
		return nil
	}
	// Every fragment block takes at least one byte of the image.
	if uint64(f.sb.fragCount) > f.sb.bytesUsed {
		return fmt.Errorf("%w: %d fragments in a %d byte image", ErrCorrupt, f.sb.fragCount, f.sb.bytesUsed)
	}
	blocks := (int(f.sb.fragCount)*fragEntrySize + metaBlockSize - 1) / metaBlockSize
	ptrs, err := f.lookupTable(f.sb.fragTable, blocks, "fragment table")
	if err != nil {
		return err
	}
	f.fragPtrs = ptrs
	return nil
}

// fragment returns the position and on-disk size word of fragment block i.
func (f *FS) fragment(i uint32) (start uint64, size uint32, err error) {
	if i >= f.sb.fragCount {
		return 0, 0, fmt.Errorf("%w: fragment %d of %d", ErrCorrupt, i, f.sb.fragCount)
	}
	const perBlock = metaBlockSize / fragEntrySize
	m := metaReader{f: f, pos: metaPos{block: f.fragPtrs[i/perBlock], off: int(i%perBlock) * fragEntrySize}, limit: f.sb.fragTable}
	start = m.u64()
	size = m.u32()
	if m.err != nil {
		return 0, 0, fmt.Errorf("fragment %d: %w", i, m.err)
	}
	return start, size, nil
}
