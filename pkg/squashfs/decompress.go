package squashfs

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz/lzma"
)

// decompressor decompresses one block. dst has length 0 and the capacity of
// the largest valid output; more output than that is an error. It is safe
// for concurrent use.
type decompressor interface {
	decompress(dst, src []byte) ([]byte, error)
}

var errTooLarge = errors.New("decompressed data larger than the block size")

func newDecompressor(c Compression, opts []byte, blockSize int) (decompressor, error) {
	le := binary.LittleEndian
	switch c {
	case Gzip:
		return &zlibDecompressor{}, nil
	case XZ:
		if len(opts) >= 8 && le.Uint32(opts[4:]) != 0 {
			return nil, fmt.Errorf("%w: xz with executable (BCJ) filters %#x", ErrUnsupported, le.Uint32(opts[4:]))
		}
		return &xzDecompressor{dictCap: max(blockSize, metaBlockSize)}, nil
	case LZMA:
		return &lzmaDecompressor{dictCap: max(blockSize, metaBlockSize)}, nil
	case LZ4:
		if len(opts) >= 4 && le.Uint32(opts) != 1 {
			return nil, fmt.Errorf("%w: lz4 format version %d", ErrUnsupported, le.Uint32(opts))
		}
		return lz4Decompressor{}, nil
	case Zstd:
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(min(runtime.GOMAXPROCS(0), 4)),
			zstd.WithDecoderMaxMemory(uint64(max(blockSize, metaBlockSize))),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			return nil, fmt.Errorf("squashfs: zstd decoder: %w", err)
		}
		return zstdDecompressor{d}, nil
	}
	return nil, fmt.Errorf("%w: %v compression", ErrUnsupported, c)
}

// readBounded reads r to its end into dst's spare capacity.
func readBounded(r io.Reader, dst []byte) ([]byte, error) {
	buf := dst[:cap(dst)]
	n, zero := 0, 0
	for {
		if n == len(buf) {
			var one [1]byte
			m, err := r.Read(one[:])
			if m > 0 {
				return nil, errTooLarge
			}
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return nil, err
			}
		} else {
			m, err := r.Read(buf[n:])
			n += m
			if err == io.EOF {
				return buf[:n], nil
			}
			if err != nil {
				return nil, err
			}
			if m > 0 {
				zero = 0
				continue
			}
		}
		if zero++; zero > 100 {
			return nil, io.ErrNoProgress
		}
	}
}

// zlibDecompressor handles squashfs "gzip", which is a zlib stream.
type zlibDecompressor struct {
	pool sync.Pool // of io.ReadCloser that are zlib.Resetter
}

func (z *zlibDecompressor) decompress(dst, src []byte) ([]byte, error) {
	br := bytes.NewReader(src)
	var zr io.ReadCloser
	var err error
	if v, ok := z.pool.Get().(io.ReadCloser); ok {
		zr = v
		err = zr.(zlib.Resetter).Reset(br, nil)
	} else {
		zr, err = zlib.NewReader(br)
	}
	if err != nil {
		return nil, err
	}
	out, err := readBounded(zr, dst)
	z.pool.Put(zr)
	return out, err
}

// xzDecompressor parses the xz container itself and hands the LZMA2 data to
// a decoder whose dictionary is bounded by the block size, so that a
// corrupt header cannot make it allocate gigabytes.
type xzDecompressor struct {
	dictCap int
}

func xzVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 9; i++ {
		v |= uint64(b[i]&0x7F) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("xz: bad varint in block header")
}

func (x *xzDecompressor) decompress(dst, src []byte) ([]byte, error) {
	const streamHeader = 12
	if len(src) < streamHeader+1 || !bytes.Equal(src[:6], []byte{0xFD, '7', 'z', 'X', 'Z', 0}) {
		return nil, errors.New("xz: bad stream header")
	}
	if crc32.ChecksumIEEE(src[6:8]) != binary.LittleEndian.Uint32(src[8:12]) || src[6] != 0 || src[7] > 0x0F {
		return nil, errors.New("xz: bad stream flags")
	}
	if src[streamHeader] == 0 { // the index: no block, no data
		return dst, nil
	}
	hsize := (int(src[streamHeader]) + 1) * 4
	if len(src) < streamHeader+hsize {
		return nil, errors.New("xz: truncated block header")
	}
	h := src[streamHeader : streamHeader+hsize]
	if crc32.ChecksumIEEE(h[:hsize-4]) != binary.LittleEndian.Uint32(h[hsize-4:]) {
		return nil, errors.New("xz: block header checksum mismatch")
	}
	flags := h[1]
	if flags&0x3C != 0 {
		return nil, errors.New("xz: reserved block flags set")
	}
	p := h[2 : hsize-4]
	for _, bit := range []byte{0x40, 0x80} { // compressed, uncompressed size
		if flags&bit != 0 {
			_, n, err := xzVarint(p)
			if err != nil {
				return nil, err
			}
			p = p[n:]
		}
	}
	if flags&3 != 0 {
		return nil, fmt.Errorf("%w: xz filter chain of %d filters (BCJ/delta)", ErrUnsupported, flags&3+1)
	}
	id, n, err := xzVarint(p)
	if err != nil {
		return nil, err
	}
	p = p[n:]
	if id != 0x21 {
		return nil, fmt.Errorf("%w: xz filter %#x", ErrUnsupported, id)
	}
	psize, n, err := xzVarint(p)
	if err != nil || psize != 1 || len(p) < n+1 || p[n] > 40 {
		return nil, errors.New("xz: bad LZMA2 filter properties")
	}
	r, err := lzma.Reader2Config{DictCap: x.dictCap}.NewReader2(bytes.NewReader(src[streamHeader+hsize:]))
	if err != nil {
		return nil, err
	}
	return readBounded(r, dst)
}

// lzmaDecompressor reads the legacy LZMA-alone format mksquashfs -comp lzma
// writes.
type lzmaDecompressor struct {
	dictCap int
}

func (l *lzmaDecompressor) decompress(dst, src []byte) ([]byte, error) {
	r, err := lzma.ReaderConfig{DictCap: l.dictCap}.NewReader(bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	return readBounded(r, dst)
}

type zstdDecompressor struct {
	d *zstd.Decoder
}

func (z zstdDecompressor) decompress(dst, src []byte) ([]byte, error) {
	out, err := z.d.DecodeAll(src, dst)
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return nil, errTooLarge
	}
	return out, err
}

// lz4Decompressor decodes the LZ4 block format (no frame).
type lz4Decompressor struct{}

var errLZ4 = errors.New("lz4: corrupt block")

func (lz4Decompressor) decompress(dst, src []byte) ([]byte, error) {
	out := dst
	limit := cap(dst)
	i := 0
	length := func(n int) (int, bool) {
		if n != 15 {
			return n, true
		}
		for i < len(src) {
			b := src[i]
			i++
			n += int(b)
			if n > limit {
				return 0, false
			}
			if b != 255 {
				return n, true
			}
		}
		return 0, false
	}
	for i < len(src) {
		token := src[i]
		i++
		lit, ok := length(int(token >> 4))
		if !ok || lit > len(src)-i {
			return nil, errLZ4
		}
		if lit > limit-len(out) {
			return nil, errTooLarge
		}
		out = append(out, src[i:i+lit]...)
		i += lit
		if i == len(src) { // the last sequence has literals only
			return out, nil
		}
		if len(src)-i < 2 {
			return nil, errLZ4
		}
		off := int(binary.LittleEndian.Uint16(src[i:]))
		i += 2
		if off == 0 || off > len(out) {
			return nil, errLZ4
		}
		ml, ok := length(int(token & 15))
		if !ok {
			return nil, errLZ4
		}
		ml += 4
		if ml > limit-len(out) {
			return nil, errTooLarge
		}
		start := len(out) - off
		if off >= ml {
			out = append(out, out[start:start+ml]...)
		} else {
			for k := 0; k < ml; k++ {
				out = append(out, out[start+k])
			}
		}
	}
	return nil, errLZ4
}
