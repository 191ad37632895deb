package initramfs

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
)

// Unix file type bits as stored in a cpio header's mode field.
const (
	sIFMT  = 0o170000
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
	sIFBLK = 0o060000
)

const (
	newcMagic    = "070701"
	newcCRCMagic = "070702"
	newcHdrLen   = 110
	trailerName  = "TRAILER!!!"
	// maxNameLen bounds the name size a reader accepts from a header.
	maxNameLen = 4096
)

// cpioWriter writes an uncompressed newc ("070701") archive. Inode numbers are
// assigned 1, 2, 3... in write order and every header has mtime 0, so the
// output depends only on the entries written and their order.
type cpioWriter struct {
	w       io.Writer
	n       int64 // bytes written so far
	nextIno uint32
	err     error
}

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, nextIno: 1} }

func (cw *cpioWriter) write(b []byte) {
	if cw.err != nil {
		return
	}
	n, err := cw.w.Write(b)
	cw.n += int64(n)
	cw.err = err
}

func (cw *cpioWriter) pad() {
	if r := cw.n % 4; r != 0 {
		cw.write(make([]byte, 4-r))
	}
}

// header writes one header + name (+ padding). ino 0 means "next inode".
func (cw *cpioWriter) header(name string, mode uint32, nlink uint32, size int, rmaj, rmin uint32, ino uint32) {
	if ino == 0 {
		ino = cw.nextIno
		cw.nextIno++
	}
	var b strings.Builder
	b.Grow(newcHdrLen + len(name) + 1)
	b.WriteString(newcMagic)
	for _, v := range []uint32{
		ino, mode, 0 /*uid*/, 0 /*gid*/, nlink, 0, /*mtime*/
		uint32(size), 0, 0 /*dev*/, rmaj, rmin, uint32(len(name) + 1), 0, /*check*/
	} {
		fmt.Fprintf(&b, "%08X", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	cw.write([]byte(b.String()))
	cw.pad()
}

func (cw *cpioWriter) dir(name string, perm uint32) {
	cw.header(name, sIFDIR|perm&0o7777, 2, 0, 0, 0, 0)
}

func (cw *cpioWriter) file(name string, perm uint32, data []byte) {
	cw.header(name, sIFREG|perm&0o7777, 1, len(data), 0, 0, 0)
	cw.write(data)
	cw.pad()
}

func (cw *cpioWriter) charDev(name string, perm, major, minor uint32) {
	cw.header(name, sIFCHR|perm&0o7777, 1, 0, major, minor, 0)
}

func (cw *cpioWriter) symlink(name, target string) {
	cw.header(name, sIFLNK|0o777, 1, len(target), 0, 0, 0)
	cw.write([]byte(target))
	cw.pad()
}

// close writes the trailer entry and reports the first write error.
func (cw *cpioWriter) close() error {
	cw.header(trailerName, 0, 1, 0, 0, 0, 0)
	// The trailer takes the next inode in sequence too; that is fixed
	// numbering all the same and matches what GNU cpio accepts.
	return cw.err
}

// Entry is one member of an initramfs archive as read back by List or Walk.
type Entry struct {
	// Name is the path inside the archive, without a leading "/" or "./".
	Name string
	// Mode holds the permission bits and the Go file type
	// (fs.ModeDir, fs.ModeSymlink, fs.ModeDevice|fs.ModeCharDevice, ...).
	Mode fs.FileMode
	// Ino, UID, GID, NLink and MTime are the header fields as stored.
	Ino, UID, GID, NLink uint32
	MTime                int64
	// Size is the length of the member's data (the target length for a
	// symlink).
	Size int64
	// RDevMajor and RDevMinor are the device numbers of a device node.
	RDevMajor, RDevMinor uint32
	// Linkname is the target of a symlink, empty otherwise.
	Linkname string
}

// List reads a gzip-compressed newc cpio archive (as Build writes it; the
// kernel's initramfs format) and returns its members in archive order,
// without the trailer. It returns an error wrapping ErrCorrupt when the
// archive is not gzip+newc or is truncated.
func List(r io.Reader) ([]Entry, error) {
	var out []Entry
	err := Walk(r, func(e Entry, _ io.Reader) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// Walk reads a gzip-compressed newc cpio archive and calls fn for each member
// in archive order (the trailer excluded). The reader passed to fn yields the
// member's data (for a regular file) and is only valid during the call; data
// fn does not read is skipped. An error returned by fn stops the walk and is
// returned as is. Archive format errors wrap ErrCorrupt.
func Walk(r io.Reader, fn func(e Entry, data io.Reader) error) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%w: gzip: %w", ErrCorrupt, err)
	}
	defer zr.Close()
	return walkCPIO(zr, fn)
}

// countingReader tracks the offset for newc's 4-byte alignment.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) skipPad() error {
	if r := c.n % 4; r != 0 {
		if _, err := io.CopyN(io.Discard, c, 4-r); err != nil {
			return err
		}
	}
	return nil
}

func walkCPIO(r io.Reader, fn func(Entry, io.Reader) error) error {
	cr := &countingReader{r: bufio.NewReaderSize(r, 64<<10)}
	hdr := make([]byte, newcHdrLen)
	for {
		if _, err := io.ReadFull(cr, hdr); err != nil {
			return fmt.Errorf("%w: header at offset %d: %w", ErrCorrupt, cr.n, unexpected(err))
		}
		magic := string(hdr[:6])
		if magic != newcMagic && magic != newcCRCMagic {
			return fmt.Errorf("%w: bad magic %q at offset %d", ErrCorrupt, magic, cr.n-newcHdrLen)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return fmt.Errorf("%w: header field %d: %w", ErrCorrupt, i, err)
			}
			f[i] = uint32(v)
		}
		namesize := f[11]
		if namesize == 0 || namesize > maxNameLen {
			return fmt.Errorf("%w: name size %d", ErrCorrupt, namesize)
		}
		nb := make([]byte, namesize)
		if _, err := io.ReadFull(cr, nb); err != nil {
			return fmt.Errorf("%w: name: %w", ErrCorrupt, unexpected(err))
		}
		if nb[namesize-1] != 0 {
			return fmt.Errorf("%w: name not NUL-terminated", ErrCorrupt)
		}
		name := string(nb[:namesize-1])
		if err := cr.skipPad(); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, unexpected(err))
		}
		if name == trailerName {
			return nil
		}
		e := Entry{
			Name:      cleanName(name),
			Mode:      goMode(f[1]),
			Ino:       f[0],
			UID:       f[2],
			GID:       f[3],
			NLink:     f[4],
			MTime:     int64(f[5]),
			Size:      int64(f[6]),
			RDevMajor: f[9],
			RDevMinor: f[10],
		}
		data := io.LimitReader(cr, e.Size)
		if e.Mode&fs.ModeSymlink != 0 {
			lb, err := io.ReadAll(data)
			if err != nil || int64(len(lb)) != e.Size {
				return fmt.Errorf("%w: symlink %s: short data", ErrCorrupt, e.Name)
			}
			e.Linkname = string(lb)
			data = io.LimitReader(cr, 0)
		}
		if err := fn(e, data); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, data); err != nil {
			return fmt.Errorf("%w: data of %s: %w", ErrCorrupt, e.Name, err)
		}
		if lr := data.(*io.LimitedReader); lr.N != 0 {
			return fmt.Errorf("%w: data of %s: truncated", ErrCorrupt, e.Name)
		}
		if err := cr.skipPad(); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, unexpected(err))
		}
	}
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func cleanName(n string) string {
	n = strings.TrimPrefix(n, "./")
	n = strings.TrimLeft(n, "/")
	if n == "" {
		return "."
	}
	return n
}

// goMode converts a Unix st_mode to an fs.FileMode.
func goMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	switch m & sIFMT {
	case sIFDIR:
		mode |= fs.ModeDir
	case sIFLNK:
		mode |= fs.ModeSymlink
	case sIFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		mode |= fs.ModeDevice
	case sIFREG:
	default:
		mode |= fs.ModeIrregular
	}
	return mode
}
