package squashfs

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/immutableinfra/kiln/pkg/testtool"
)

// fuzzSeedTree is a small tree touching every structure: directories,
// a multi-block file, a sparse file, fragments, symlinks, an empty file.
func fuzzSeedTree(t testing.TB) string {
	root := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "boot"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "usr/lib/modules/6.1.0-1-amd64/kernel"), 0o755))
	must(os.WriteFile(filepath.Join(root, "boot/vmlinuz-6.1.0-1-amd64"), payload(1, 9000), 0o644))
	must(os.WriteFile(filepath.Join(root, "usr/lib/modules/6.1.0-1-amd64/modules.dep"), []byte("kernel/a.ko:\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "usr/lib/modules/6.1.0-1-amd64/kernel/a.ko"), []byte("module a"), 0o644))
	must(os.WriteFile(filepath.Join(root, "empty"), nil, 0o600))
	must(os.Symlink("usr/lib", filepath.Join(root, "lib")))
	must(os.Symlink("boot/vmlinuz-6.1.0-1-amd64", filepath.Join(root, "vmlinuz")))
	must(os.Symlink("/usr/../boot", filepath.Join(root, "abs")))
	sp, err := os.Create(filepath.Join(root, "sparse"))
	must(err)
	_, err = sp.WriteAt([]byte("tail"), 3*4096+10)
	must(err)
	must(sp.Close())
	for i := range 5 {
		must(os.WriteFile(filepath.Join(root, "usr", string(rune('a'+i))), []byte{byte(i)}, 0o644))
	}
	return root
}

// exercise opens data and reads everything in it, within bounds that keep
// one fuzz input fast: at most 500 entries and 1 MiB per file.
func exercise(data []byte) error {
	fsys, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return err
	}
	_ = fsys.Info()
	n := 0
	errStop := errors.New("stop")
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if n++; n > 500 {
			return errStop
		}
		if err != nil {
			return nil // keep walking the rest
		}
		if _, err := d.Info(); err != nil {
			return nil
		}
		fsys.Lstat(p)
		fsys.Stat(p)
		if d.Type() == fs.ModeSymlink {
			fsys.ReadLink(p)
		}
		f, err := fsys.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			io.Copy(io.Discard, io.LimitReader(f, 1<<20))
			if ra, ok := f.(io.ReaderAt); ok && fi.Size() > 0 {
				ra.ReadAt(make([]byte, 100), fi.Size()/2)
			}
		}
		return nil
	})
	FindKernel(fsys)
	if err == errStop {
		return nil
	}
	return err
}

// fuzzMinimizeTime caps how long the fuzzer minimizes each new input.
// Go minimizes every newly interesting input for -fuzzminimizetime (60 s by
// default) before fuzzing on, so with seeds of several KiB a plain
// `-fuzztime 60s` run would spend its whole budget minimizing one input.
// An explicit -fuzzminimizetime on the command line wins.
const fuzzMinimizeTime = "2s"

func FuzzOpen(f *testing.F) {
	testtool.Need(f, "mksquashfs")
	set := false
	flag.Visit(func(fl *flag.Flag) { set = set || fl.Name == "test.fuzzminimizetime" })
	if fl := flag.Lookup("test.fuzzminimizetime"); fl != nil && !set {
		if err := fl.Value.Set(fuzzMinimizeTime); err != nil {
			f.Fatal(err)
		}
	}
	root := fuzzSeedTree(f)
	for _, args := range [][]string{
		{"-comp", "gzip"},
		{"-comp", "xz"},
		{"-comp", "zstd"},
		{"-comp", "lz4"},
		{"-comp", "lzma"},
		{"-noI", "-noD", "-noF"},
		{"-no-fragments", "-comp", "zstd"},
		{"-always-use-fragments", "-noI"},
	} {
		img, err := os.ReadFile(mksquashfs(f, root, append(args, "-b", "4K", "-no-xattrs")...))
		if err != nil {
			f.Fatal(err)
		}
		if err := exercise(img); err != nil {
			f.Fatalf("seed %v: %v", args, err)
		}
		f.Add(img)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		exercise(data) // must not panic, hang or allocate without bound
	})
}
