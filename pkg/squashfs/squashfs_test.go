package squashfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"testing/iotest"
	"time"

	"github.com/immutableinfra/kiln/pkg/testtool"
)

// mksquashfs builds an image of src with the given extra options and
// returns its path.
func mksquashfs(t testing.TB, src string, args ...string) string {
	t.Helper()
	bin := testtool.Need(t, "mksquashfs")
	out := filepath.Join(t.TempDir(), "image.sqfs")
	cmd := exec.Command(bin, append([]string{src, out, "-noappend", "-no-progress", "-quiet"}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs %v: %v\n%s", args, err, b)
	}
	return out
}

// openImage opens the image file at p with Open.
func openImage(t testing.TB, p string) *FS {
	t.Helper()
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	st, err := fh.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := Open(fh, st.Size())
	if err != nil {
		t.Fatalf("Open(%s): %v", p, err)
	}
	return fsys
}

// payload returns n bytes mixing random and repetitive runs, so that some
// blocks compress and some do not.
func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))
	b := make([]byte, n)
	for i := 0; i < n; {
		run := min(n-i, 1+r.IntN(20000))
		if r.IntN(2) == 0 {
			for j := range run {
				b[i+j] = byte(r.Uint32())
			}
		} else {
			c := byte(r.Uint32())
			for j := range run {
				b[i+j] = c + byte(j%7)
			}
		}
		i += run
	}
	return b
}

const kver = "6.1.0-27-cloud-amd64"

// buildTree writes the reference tree the image tests compare against.
func buildTree(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	w := func(name string, data []byte, mode os.FileMode) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // beat the umask
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	w("empty", nil, 0o644)
	w("hello.txt", []byte("hello, kiln\n"), 0o644)
	w("small-exec", []byte("#!/bin/sh\necho hi\n"), 0o755)
	w("secret", []byte("0600"), 0o600)
	w("setuid", []byte("suid"), 0o4755)
	w("multi-block", payload(1, 5*128*1024+777), 0o644) // 5 blocks + tail at 128 KiB
	w("exact-blocks", payload(2, 2*128*1024), 0o644)    // no tail
	w("one-byte-over", payload(3, 128*1024+1), 0o644)   // one block + 1 byte tail
	w("usr/share/doc/big.bin", payload(4, 3*1024*1024), 0o644)
	w("usr/lib/modules/"+kver+"/modules.dep", []byte("kernel/drivers/net/virtio_net.ko.zst: kernel/drivers/net/net_failover.ko.zst\n"), 0o644)
	w("usr/lib/modules/"+kver+"/kernel/drivers/net/virtio_net.ko.zst", payload(5, 70000), 0o644)
	w("usr/lib/modules/"+kver+"/kernel/drivers/net/net_failover.ko.zst", payload(6, 9000), 0o644)
	w("usr/lib/modules/"+kver+"/kernel/fs/squashfs/squashfs.ko.xz", payload(7, 30000), 0o644)
	w("usr/lib/modules/"+kver+"/kernel/fs/overlayfs/overlay.ko", payload(8, 200000), 0o644)
	w("boot/vmlinuz-"+kver, payload(9, 300000), 0o644)
	w("boot/vmlinuz-6.1.0-9-cloud-amd64", payload(10, 1000), 0o644)
	w("boot/config-"+kver, []byte("CONFIG_SQUASHFS=m\n"), 0o644)
	link("usr/lib", "lib")                         // merged /usr, relative
	link("boot/vmlinuz-"+kver, "vmlinuz")          // Debian's /vmlinuz
	link("/usr/share/doc/big.bin", "etc/abs")      // absolute
	link("../../usr/lib/modules", "etc/x/mods")    // relative with ..
	link("does/not/exist", "dangling")             // dangling
	link("loop-b", "loop-a")                       // a loop
	link("loop-a", "loop-b")                       //
	link(strings.Repeat("long/", 200)+"x", "long") // a long target

	// A sparse file: data, a hole of three blocks, data.
	sp, err := os.Create(filepath.Join(root, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Write(payload(11, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.WriteAt([]byte("end of the sparse file"), 4*128*1024+5); err != nil {
		t.Fatal(err)
	}
	sp.Close()

	// A big directory: more than 256 entries, so several headers, and
	// more than one metadata block of listing.
	for i := range 700 {
		w(fmt.Sprintf("bigdir/entry-with-a-longish-name-%04d", i), fmt.Appendf(nil, "%d\n", i), 0o644)
	}
	// A deep tree.
	deep := "deep"
	for i := range 60 {
		deep = filepath.Join(deep, fmt.Sprintf("d%02d", i))
	}
	w(filepath.Join(deep, "leaf"), []byte("leaf\n"), 0o644)
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "emptydir"), 0o700); err != nil {
		t.Fatal(err)
	}
	// Hard links share an inode.
	if err := os.Link(filepath.Join(root, "hello.txt"), filepath.Join(root, "hardlink")); err != nil {
		t.Fatal(err)
	}
	// Fixed times so that a mismatch is visible.
	mt := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			os.Chtimes(p, mt, mt)
		}
		return nil
	})
	return root
}

// addSpecials adds a fifo and a unix socket to root.
func addSpecials(t *testing.T, root string) {
	t.Helper()
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(root, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

// compareTree checks that fsys holds exactly the tree at root.
func compareTree(t *testing.T, fsys *FS, root string) {
	t.Helper()
	want := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		want[rel] = true
		src, err := os.Lstat(p)
		if err != nil {
			return err
		}
		got, err := fsys.Lstat(rel)
		if err != nil {
			t.Errorf("Lstat(%q): %v", rel, err)
			return nil
		}
		if got.Mode() != src.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, got.Mode(), src.Mode())
		}
		if !got.ModTime().Equal(src.ModTime().Truncate(time.Second)) {
			t.Errorf("%s: mtime %v, want %v", rel, got.ModTime(), src.ModTime())
		}
		st := src.Sys().(*syscall.Stat_t)
		ii := got.Sys().(*InodeInfo)
		if ii.UID != st.Uid || ii.GID != st.Gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, ii.UID, ii.GID, st.Uid, st.Gid)
		}
		if got.Name() != filepath.Base(p) && rel != "." {
			t.Errorf("%s: name %q", rel, got.Name())
		}
		switch {
		case src.Mode().IsRegular():
			if got.Size() != src.Size() {
				t.Errorf("%s: size %d, want %d", rel, got.Size(), src.Size())
			}
			if ii.Nlink != uint32(st.Nlink) {
				t.Errorf("%s: nlink %d, want %d", rel, ii.Nlink, st.Nlink)
			}
			wantData, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			gotData, err := fs.ReadFile(fsys, rel)
			if err != nil {
				t.Errorf("ReadFile(%q): %v", rel, err)
			} else if !bytes.Equal(gotData, wantData) {
				t.Errorf("%s: content differs (%d bytes, want %d)", rel, len(gotData), len(wantData))
			}
		case src.Mode()&fs.ModeSymlink != 0:
			wantT, _ := os.Readlink(p)
			gotT, err := fsys.ReadLink(rel)
			if err != nil || gotT != wantT {
				t.Errorf("ReadLink(%q) = %q, %v; want %q", rel, gotT, err, wantT)
			}
			if got.Size() != int64(len(wantT)) {
				t.Errorf("%s: symlink size %d, want %d", rel, got.Size(), len(wantT))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	n := 0
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		if !want[p] {
			extra = append(extra, p)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.Type() != info.Mode().Type() {
			t.Errorf("%s: DirEntry type %v, inode %v", p, d.Type(), info.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("WalkDir: %v", err)
	}
	if len(extra) > 0 || n != len(want) {
		t.Errorf("image has %d entries, tree %d; extra: %v", n, len(want), extra)
	}
}

func TestImages(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	root := buildTree(t)
	addSpecials(t, root)
	tests := []struct {
		name string
		args []string
	}{
		{"gzip", nil},
		{"xz", []string{"-comp", "xz"}},
		{"zstd", []string{"-comp", "zstd", "-Xcompression-level", "19"}},
		{"lz4", []string{"-comp", "lz4"}},
		{"lz4-hc", []string{"-comp", "lz4", "-Xhc"}},
		{"lzma", []string{"-comp", "lzma"}},
		{"uncompressed", []string{"-noI", "-noD", "-noF", "-noX"}},
		{"uncompressed-data-only", []string{"-comp", "zstd", "-noD"}},
		{"no-fragments", []string{"-no-fragments"}},
		{"always-use-fragments", []string{"-always-use-fragments"}},
		{"tailends", []string{"-tailends", "-comp", "xz"}},
		{"block-4k", []string{"-b", "4K", "-comp", "zstd"}},
		{"block-1m", []string{"-b", "1M", "-comp", "xz"}},
		{"no-sparse", []string{"-no-sparse", "-comp", "lz4"}},
		{"no-duplicates-no-exports", []string{"-no-duplicates", "-no-exports", "-no-xattrs"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := mksquashfs(t, root, tc.args...)
			fsys := openImage(t, img)
			compareTree(t, fsys, root)
		})
	}
}

// TestImageInfo checks the superblock facts for a few compressors.
func TestImageInfo(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	for _, tc := range []struct {
		args  []string
		comp  Compression
		block uint32
	}{
		{nil, Gzip, 128 << 10},
		{[]string{"-comp", "xz", "-b", "1M"}, XZ, 1 << 20},
		{[]string{"-comp", "zstd", "-b", "64K"}, Zstd, 64 << 10},
		{[]string{"-comp", "lz4"}, LZ4, 128 << 10},
		{[]string{"-comp", "lzma"}, LZMA, 128 << 10},
	} {
		t.Run(tc.comp.String(), func(t *testing.T) {
			img := mksquashfs(t, src, append(tc.args, "-mkfs-time", "1700000000")...)
			info := openImage(t, img).Info()
			st, _ := os.Stat(img)
			if info.Compression != tc.comp || info.BlockSize != tc.block || info.Inodes != 2 ||
				!info.ModTime.Equal(time.Unix(1700000000, 0)) || info.BytesUsed > st.Size() || info.BytesUsed < 96 {
				t.Errorf("Info() = %+v", info)
			}
		})
	}
}

// TestFSConformance runs testing/fstest.TestFS, which exercises Open,
// ReadDir, Stat, ReadLink, Glob, Seek and ReadAt against each other.
func TestFSConformance(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	root := buildTree(t)
	for _, rm := range []string{"loop-a", "loop-b", "dangling", "long", "bigdir"} {
		os.RemoveAll(filepath.Join(root, rm))
	}
	for _, comp := range []string{"gzip", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			fsys := openImage(t, mksquashfs(t, root, "-comp", comp))
			if err := fstest.TestFS(fsys, "hello.txt", "boot/vmlinuz-"+kver, "usr/lib/modules/"+kver+"/modules.dep",
				"usr/share/doc/big.bin", "vmlinuz", "deep/d00/d01"); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestReaders checks Read, ReadAt and Seek of multi-block, sparse and
// fragment-tailed files with iotest.TestReader.
func TestReaders(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	root := buildTree(t)
	fsys := openImage(t, mksquashfs(t, root, "-b", "4K", "-always-use-fragments"))
	for _, name := range []string{"multi-block", "exact-blocks", "one-byte-over", "sparse", "empty", "hello.txt", "usr/share/doc/big.bin"} {
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(root, name))
			if err != nil {
				t.Fatal(err)
			}
			f, err := fsys.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := iotest.TestReader(f, want); err != nil {
				t.Error(err)
			}
			// Random ReadAt, backwards too, across chunk boundaries.
			ra := f.(io.ReaderAt)
			r := rand.New(rand.NewPCG(7, 7))
			for range 200 {
				if len(want) == 0 {
					break
				}
				off := r.IntN(len(want))
				n := min(len(want)-off, 1+r.IntN(20000))
				buf := make([]byte, n)
				if m, err := ra.ReadAt(buf, int64(off)); m != n || (err != nil && err != io.EOF) || !bytes.Equal(buf, want[off:off+n]) {
					t.Fatalf("ReadAt(%d, %d) = %d, %v", n, off, m, err)
				}
			}
		})
	}
}

func TestSpecialFiles(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	img := mksquashfs(t, src, "-p", "dev d 755 0 0", "-p", "dev/null c 666 0 0 1 3",
		"-p", "dev/sda b 660 0 6 8 0", "-p", "dev/big c 600 0 0 300 70000",
		"-p", "fifo i 640 0 0 f", "-p", "sock i 600 0 0 s")
	fsys := openImage(t, img)
	tests := []struct {
		name         string
		mode         fs.FileMode
		major, minor uint32
		gid          uint32
	}{
		{"dev/null", fs.ModeDevice | fs.ModeCharDevice | 0o666, 1, 3, 0},
		{"dev/sda", fs.ModeDevice | 0o660, 8, 0, 6},
		{"dev/big", fs.ModeDevice | fs.ModeCharDevice | 0o600, 300, 70000, 0},
		{"fifo", fs.ModeNamedPipe | 0o640, 0, 0, 0},
		{"sock", fs.ModeSocket | 0o600, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fi, err := fsys.Lstat(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			ii := fi.Sys().(*InodeInfo)
			if fi.Mode() != tc.mode || ii.Major() != tc.major || ii.Minor() != tc.minor || ii.GID != tc.gid {
				t.Errorf("got %v %d:%d gid %d, want %v %d:%d gid %d", fi.Mode(), ii.Major(), ii.Minor(), ii.GID, tc.mode, tc.major, tc.minor, tc.gid)
			}
			f, err := fsys.Open(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Read(make([]byte, 1)); err == nil {
				t.Error("Read of a special file succeeded")
			}
		})
	}
	ents, err := fsys.ReadDir("dev")
	if err != nil || len(ents) != 3 || ents[0].Name() != "big" || ents[0].Type() != fs.ModeDevice|fs.ModeCharDevice {
		t.Errorf("ReadDir(dev) = %v, %v", ents, err)
	}
}

func TestPaths(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	fsys := openImage(t, mksquashfs(t, buildTree(t)))
	tests := []struct {
		name     string
		realpath string
		err      error
	}{
		{"vmlinuz", "boot/vmlinuz-" + kver, nil},
		{"lib/modules/" + kver + "/modules.dep", "usr/lib/modules/" + kver + "/modules.dep", nil},
		{"etc/abs", "usr/share/doc/big.bin", nil},
		{"etc/x/mods", "usr/lib/modules", nil},
		{"etc/x/mods/" + kver, "usr/lib/modules/" + kver, nil},
		{".", ".", nil},
		{"dangling", "", fs.ErrNotExist},
		{"missing", "", fs.ErrNotExist},
		{"hello.txt/x", "", errNotDir},
		{"loop-a", "", ErrSymlinkLoop},
		{"loop-a/x", "", ErrSymlinkLoop},
		{"/etc", "", fs.ErrInvalid},
		{"etc/../hello.txt", "", fs.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := fsys.Realpath(tc.name)
			if !errors.Is(err, tc.err) || got != tc.realpath {
				t.Errorf("Realpath = %q, %v; want %q, %v", got, err, tc.realpath, tc.err)
			}
			_, serr := fsys.Stat(tc.name)
			if !errors.Is(serr, tc.err) {
				t.Errorf("Stat error %v, want %v", serr, tc.err)
			}
			var pe *fs.PathError
			if serr != nil && (!errors.As(serr, &pe) || pe.Path != tc.name) {
				t.Errorf("Stat error %v is not a PathError for %q", serr, tc.name)
			}
		})
	}
	// Lstat does not follow the last link; ReadLink fails on non-links.
	if fi, err := fsys.Lstat("lib"); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat(lib) = %v, %v", fi, err)
	}
	if fi, err := fsys.Stat("lib"); err != nil || !fi.IsDir() {
		t.Errorf("Stat(lib) = %v, %v", fi, err)
	}
	if fi, err := fsys.Lstat("lib/modules"); err != nil || !fi.IsDir() {
		t.Errorf("Lstat(lib/modules) = %v, %v", fi, err)
	}
	if _, err := fsys.ReadLink("hello.txt"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("ReadLink(hello.txt) error %v", err)
	}
	if got, err := fs.Glob(fsys, "lib/modules/*/kernel/*/*/*.ko*"); err != nil || len(got) != 4 {
		t.Errorf("Glob = %v, %v", got, err)
	}
	ents, err := fsys.ReadDir("bigdir")
	if err != nil || len(ents) != 700 || !slices.IsSortedFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) }) {
		t.Errorf("ReadDir(bigdir): %d entries, %v", len(ents), err)
	}
	// ReadDir(n) in pieces gives the same entries.
	d, err := fsys.Open("bigdir")
	if err != nil {
		t.Fatal(err)
	}
	var pieces []fs.DirEntry
	for {
		part, err := d.(fs.ReadDirFile).ReadDir(256)
		pieces = append(pieces, part...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(pieces) != 700 || pieces[699].Name() != ents[699].Name() {
		t.Errorf("ReadDir(256) loop gave %d entries", len(pieces))
	}
}

func TestNotSquashfs(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(payload(1, 100000))
	zw.Close()
	random := payload(2, 4096)
	tests := []struct {
		name string
		data []byte
		err  error
	}{
		{"empty", nil, ErrNotSquashfs},
		{"random", random, ErrNotSquashfs},
		{"gzip", gz.Bytes(), ErrNotSquashfs},
		{"zeros", make([]byte, 8192), ErrNotSquashfs},
		{"magic only", append([]byte("hsqs"), make([]byte, 200)...), ErrNotSquashfs},
		{"short", []byte("hsqs"), ErrNotSquashfs},
	}
	if _, err := exec.LookPath("mksquashfs"); err == nil || os.Getenv(testtool.RequireEnv) != "" {
		src := t.TempDir()
		os.WriteFile(filepath.Join(src, "f"), payload(3, 50000), 0o644)
		img, err := os.ReadFile(mksquashfs(t, src))
		if err != nil {
			t.Fatal(err)
		}
		tests = append(tests,
			struct {
				name string
				data []byte
				err  error
			}{"truncated superblock", img[:50], ErrNotSquashfs},
			struct {
				name string
				data []byte
				err  error
			}{"truncated", img[:len(img)/2], ErrCorrupt},
			struct {
				name string
				data []byte
				err  error
			}{"version 3", patch(img, 28, 3, 0), ErrUnsupported},
			struct {
				name string
				data []byte
				err  error
			}{"bad block log", patch(img, 22, 13, 0), ErrNotSquashfs},
			struct {
				name string
				data []byte
				err  error
			}{"lzo", patch(img, 20, 3, 0), ErrUnsupported},
		)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tc.data), int64(len(tc.data)))
			if !errors.Is(err, tc.err) {
				t.Fatalf("Open error %v, want %v", err, tc.err)
			}
			if !strings.HasPrefix(err.Error(), "squashfs: ") {
				t.Errorf("error %q does not name the package", err)
			}
		})
	}
}

func patch(b []byte, off int, v ...byte) []byte {
	c := slices.Clone(b)
	copy(c[off:], v)
	return c
}

func TestUnsupportedCompressors(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), payload(3, 50000), 0o644)
	for _, args := range [][]string{{"-comp", "lzo"}, {"-comp", "xz", "-Xbcj", "x86"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			img := mksquashfs(t, src, args...)
			fh, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			st, _ := fh.Stat()
			_, err = Open(fh, st.Size())
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Open error %v, want ErrUnsupported", err)
			}
			t.Log(err)
		})
	}
}

// BenchmarkRead64MiB reads a 64 MiB file out of an image.
func BenchmarkRead64MiB(b *testing.B) {
	testtool.Need(b, "mksquashfs")
	src := b.TempDir()
	data := payload(42, 64<<20)
	if err := os.WriteFile(filepath.Join(src, "big"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	for _, comp := range []string{"gzip", "xz", "zstd", "lz4", "lzma"} {
		b.Run(comp, func(b *testing.B) {
			fsys := openImage(b, mksquashfs(b, src, "-comp", comp))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				f, err := fsys.Open("big")
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, f)
				if err != nil || n != int64(len(data)) {
					b.Fatalf("read %d, %v", n, err)
				}
				f.Close()
			}
		})
	}
}

// countingReader records the reads made through it.
type countingReader struct {
	r       io.ReaderAt
	mu      sync.Mutex
	total   int64
	largest int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.total += int64(len(p))
	c.largest = max(c.largest, len(p))
	c.mu.Unlock()
	return c.r.ReadAt(p, off)
}

// TestReadsOnDemand reads a 10 MiB file and checks that the reader never
// asked for more than a block at a time, nor for much more than the file.
func TestReadsOnDemand(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	src := t.TempDir()
	want := payload(5, 10<<20)
	os.WriteFile(filepath.Join(src, "ten"), want, 0o644)
	os.WriteFile(filepath.Join(src, "other"), payload(6, 30<<20), 0o644)
	img := mksquashfs(t, src, "-comp", "zstd")
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	cr := &countingReader{r: fh}
	fsys, err := Open(cr, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	got, err := fs.ReadFile(fsys, "ten")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadFile: %d bytes, %v", len(got), err)
	}
	if cr.largest > 128<<10 {
		t.Errorf("largest single read %d bytes, more than a block", cr.largest)
	}
	if cr.total > int64(len(want))+1<<20 || cr.total*3 > st.Size() {
		t.Errorf("read %d bytes of a %d byte image for a %d byte file", cr.total, st.Size(), len(want))
	}
}

// TestImageStructure checks that the test images really contain the
// structures the other tests claim to cover.
func TestImageStructure(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	root := buildTree(t)
	inodeOf := func(t *testing.T, fsys *FS, name string) *inode {
		t.Helper()
		in, _, err := fsys.resolve(name, false)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	t.Run("default", func(t *testing.T) {
		fsys := openImage(t, mksquashfs(t, root))
		sp := inodeOf(t, fsys, "sparse")
		f := newFile(fsys, "sparse", fileInfo{in: sp})
		sparse := 0
		for i := range int64(sp.nblocks) {
			if _, w, err := f.locate(i); err != nil {
				t.Fatal(err)
			} else if w == 0 {
				sparse++
			}
		}
		if sparse < 3 || !sp.ext {
			t.Errorf("sparse file: %d sparse blocks of %d, extended inode %v", sparse, sp.nblocks, sp.ext)
		}
		if big := inodeOf(t, fsys, "bigdir"); !big.ext || big.dirSize < 2*metaBlockSize {
			t.Errorf("bigdir: extended %v, listing %d bytes", big.ext, big.dirSize)
		}
		if hl := inodeOf(t, fsys, "hardlink"); hl.nlink != 2 || !hl.ext {
			t.Errorf("hardlink: nlink %d, extended %v", hl.nlink, hl.ext)
		}
		if in := inodeOf(t, fsys, "hello.txt"); in.frag == noFragment {
			t.Error("hello.txt is not in a fragment")
		}
		if in := inodeOf(t, fsys, "multi-block"); in.frag != noFragment || in.nblocks != 6 {
			t.Errorf("multi-block: fragment %d, %d blocks", in.frag, in.nblocks)
		}
	})
	t.Run("always-use-fragments", func(t *testing.T) {
		fsys := openImage(t, mksquashfs(t, root, "-always-use-fragments"))
		if in := inodeOf(t, fsys, "multi-block"); in.frag == noFragment || in.nblocks != 5 {
			t.Errorf("multi-block: fragment %d, %d blocks", in.frag, in.nblocks)
		}
	})
	t.Run("no-fragments", func(t *testing.T) {
		fsys := openImage(t, mksquashfs(t, root, "-no-fragments"))
		if fsys.Info().Fragments != 0 {
			t.Errorf("%d fragments", fsys.Info().Fragments)
		}
	})
}

// TestConcurrentReads reads files of one FS from several goroutines (run
// with -race to check the caches' locking).
func TestConcurrentReads(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	root := buildTree(t)
	for _, comp := range []string{"gzip", "zstd", "xz"} {
		t.Run(comp, func(t *testing.T) {
			fsys := openImage(t, mksquashfs(t, root, "-comp", comp, "-b", "16K"))
			names := []string{"multi-block", "hello.txt", "usr/share/doc/big.bin", "sparse", "bigdir/entry-with-a-longish-name-0123", "vmlinuz"}
			var wg sync.WaitGroup
			errs := make(chan error, 4*len(names))
			for g := range 4 {
				for _, n := range names {
					wg.Add(1)
					go func() {
						defer wg.Done()
						want, err := os.ReadFile(filepath.Join(root, n))
						if err != nil {
							errs <- err
							return
						}
						got, err := fs.ReadFile(fsys, n)
						if err != nil || !bytes.Equal(got, want) {
							errs <- fmt.Errorf("goroutine %d: %s: %d bytes, %v", g, n, len(got), err)
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestDirectoryLoop patches a directory entry of an uncompressed image to
// point at the root: walks must end with ErrCorrupt instead of looping.
func TestDirectoryLoop(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "a", "zzloop"), 0o755)
	os.WriteFile(filepath.Join(src, "a", "file"), []byte("x"), 0o644)
	img, err := os.ReadFile(mksquashfs(t, src, "-noI", "-noD", "-noF"))
	if err != nil {
		t.Fatal(err)
	}
	sb := parseSuperblock(img)
	i := bytes.Index(img[sb.dirTable:], []byte("zzloop"))
	if i < 8 || sb.rootRef>>16 != 0 {
		t.Fatalf("entry not found (%d) or root not in the first block (%#x)", i, sb.rootRef)
	}
	e := int(sb.dirTable) + i - 8
	img[e], img[e+1] = byte(sb.rootRef), byte(sb.rootRef>>8) // offset of the root inode
	fsys, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Stat("a/zzloop"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Stat(a/zzloop) error %v, want ErrCorrupt", err)
	}
	visited := 0
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if visited++; visited > 100 {
			return errors.New("walk does not end")
		}
		return err
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("WalkDir error %v after %d entries, want ErrCorrupt", err, visited)
	}
}
