package squashfs

import (
	"container/list"
	"encoding/binary"
	"fmt"
	"sync"
)

// lru is a small, mutex-guarded least-recently-used cache keyed by a
// position in the image.
type lru[V any] struct {
	mu    sync.Mutex
	limit int
	items map[uint64]*list.Element
	order list.List // front = most recently used
}

type lruItem[V any] struct {
	key uint64
	val V
}

func newLRU[V any](limit int) *lru[V] {
	return &lru[V]{limit: limit, items: make(map[uint64]*list.Element, limit)}
}

func (c *lru[V]) get(key uint64) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*lruItem[V]).val, true
	}
	var zero V
	return zero, false
}

func (c *lru[V]) put(key uint64, val V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		e.Value.(*lruItem[V]).val = val
		c.order.MoveToFront(e)
		return
	}
	c.items[key] = c.order.PushFront(&lruItem[V]{key: key, val: val})
	for c.order.Len() > c.limit {
		e := c.order.Back()
		c.order.Remove(e)
		delete(c.items, e.Value.(*lruItem[V]).key)
	}
}

// metaBlock is one decompressed metadata block.
type metaBlock struct {
	data []byte
	next uint64 // image offset of the following block's header
}

// metaBlock returns the metadata block whose header is at off; the block
// must end at or before limit (the end of its table).
func (f *FS) metaBlock(off, limit uint64) (*metaBlock, error) {
	if mb, ok := f.meta.get(off); ok {
		if mb.next > limit {
			return nil, fmt.Errorf("%w: metadata block at %d crosses the table end %d", ErrCorrupt, off, limit)
		}
		return mb, nil
	}
	if off >= limit || limit-off < 3 {
		return nil, fmt.Errorf("%w: metadata block at %d beyond the table end %d", ErrCorrupt, off, limit)
	}
	h, err := f.readAt(off, 2)
	if err != nil {
		return nil, err
	}
	word := binary.LittleEndian.Uint16(h)
	n := int(word & 0x7FFF)
	if n == 0 || n > metaBlockSize || uint64(n) > limit-off-2 {
		return nil, fmt.Errorf("%w: metadata block at %d has size %d", ErrCorrupt, off, n)
	}
	raw, err := f.readAt(off+2, n)
	if err != nil {
		return nil, err
	}
	data := raw
	if word&0x8000 == 0 {
		data, err = f.dec.decompress(make([]byte, 0, metaBlockSize), raw)
		if err != nil {
			return nil, fmt.Errorf("%w: metadata block at %d: %w", ErrCorrupt, off, err)
		}
		if len(data) == 0 {
			return nil, fmt.Errorf("%w: empty metadata block at %d", ErrCorrupt, off)
		}
	}
	mb := &metaBlock{data: data, next: off + 2 + uint64(n)}
	f.meta.put(off, mb)
	return mb, nil
}

// metaPos is a position in a metadata table: the image offset of a block's
// header and an offset into its decompressed data.
type metaPos struct {
	block uint64
	off   int
}

// metaReader reads consecutive bytes of a metadata table, crossing block
// boundaries. Errors are sticky: after the first, reads return zeros and
// err says what went wrong.
type metaReader struct {
	f     *FS
	pos   metaPos
	limit uint64 // end of the table
	err   error
	buf   [8]byte
}

func (m *metaReader) read(p []byte) {
	for len(p) > 0 && m.err == nil {
		mb, err := m.f.metaBlock(m.pos.block, m.limit)
		if err != nil {
			m.err = err
			return
		}
		if m.pos.off > len(mb.data) {
			m.err = fmt.Errorf("%w: offset %d beyond metadata block at %d (%d bytes)", ErrCorrupt, m.pos.off, m.pos.block, len(mb.data))
			return
		}
		if m.pos.off == len(mb.data) {
			m.pos = metaPos{block: mb.next}
			continue
		}
		n := copy(p, mb.data[m.pos.off:])
		p = p[n:]
		m.pos.off += n
	}
}

func (m *metaReader) u16() uint16 {
	m.read(m.buf[:2])
	if m.err != nil {
		return 0
	}
	return binary.LittleEndian.Uint16(m.buf[:])
}

func (m *metaReader) u32() uint32 {
	m.read(m.buf[:4])
	if m.err != nil {
		return 0
	}
	return binary.LittleEndian.Uint32(m.buf[:])
}

func (m *metaReader) u64() uint64 {
	m.read(m.buf[:8])
	if m.err != nil {
		return 0
	}
	return binary.LittleEndian.Uint64(m.buf[:])
}

// bytes reads n bytes into a new slice; n must already be bounded.
func (m *metaReader) bytes(n int) []byte {
	b := make([]byte, n)
	m.read(b)
	return b
}
