package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

const testKver = "5.99.0-kiln-test"

// fakeModule is one module file in a fake image tree.
type fakeModule struct {
	path string   // relative to lib/modules/<kver>, with its compression suffix
	deps []string // paths, as modules.dep lists them
}

// fakeModules is a small kernel: virtio_net needs net_failover which needs
// failover; virtio_pci needs the two transport libraries and virtio_ring
// (which needs virtio); mlx5-core is spelled with '-' on disk.
var fakeModules = []fakeModule{
	{"kernel/drivers/virtio/virtio.ko.xz", nil},
	{"kernel/drivers/virtio/virtio_ring.ko.zst", []string{"kernel/drivers/virtio/virtio.ko.xz"}},
	{"kernel/drivers/virtio/virtio_pci_modern_dev.ko.gz", nil},
	{"kernel/drivers/virtio/virtio_pci_legacy_dev.ko", nil},
	{"kernel/drivers/virtio/virtio_pci.ko.xz", []string{
		"kernel/drivers/virtio/virtio_pci_legacy_dev.ko", "kernel/drivers/virtio/virtio_pci_modern_dev.ko.gz",
		"kernel/drivers/virtio/virtio_ring.ko.zst", "kernel/drivers/virtio/virtio.ko.xz"}},
	{"kernel/net/core/failover.ko.zst", nil},
	{"kernel/drivers/net/net_failover.ko.xz", []string{"kernel/net/core/failover.ko.zst"}},
	{"kernel/drivers/net/virtio_net.ko.xz", []string{
		"kernel/drivers/net/net_failover.ko.xz", "kernel/net/core/failover.ko.zst",
		"kernel/drivers/virtio/virtio_ring.ko.zst", "kernel/drivers/virtio/virtio.ko.xz"}},
	{"kernel/drivers/block/loop.ko", nil},
	{"kernel/fs/squashfs/squashfs.ko.gz", nil},
	{"kernel/fs/overlayfs/overlay.ko.zst", nil},
	{"kernel/drivers/net/ethernet/mellanox/mlx5/core/mlx5-core.ko.xz", nil},
	{"kernel/sound/unwanted.ko.xz", nil},
}

var fakeBuiltin = []string{"kernel/fs/ext4/ext4.ko", "kernel/net/packet/af_packet.ko", "kernel/lib/crc32.ko"}

// moduleContent is the plain .ko content of a fake module; it is big enough
// and varied enough that compression round trips are meaningful.
func moduleContent(p string) []byte {
	var b bytes.Buffer
	b.WriteString("\x7fELF fake module " + p + "\n")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "%s:%d:%x\n", filepath.Base(p), i, i*i*7919)
	}
	return b.Bytes()
}

func compress(t testing.TB, p string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch {
	case strings.HasSuffix(p, ".xz"):
		w, err = xz.NewWriter(&buf)
	case strings.HasSuffix(p, ".zst"):
		w, err = zstd.NewWriter(&buf)
	case strings.HasSuffix(p, ".gz"):
		w = gzip.NewWriter(&buf)
	default:
		return data
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeTree builds a fake image root under dir with its modules below
// modRoot (relative to dir, normally "lib/modules/<kver>").
func writeTree(t testing.TB, dir, modRoot string) {
	t.Helper()
	md := filepath.Join(dir, modRoot)
	var dep strings.Builder
	for _, m := range fakeModules {
		f := filepath.Join(md, m.path)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, compress(t, m.path, moduleContent(plainPath(m.path))), 0o644); err != nil {
			t.Fatal(err)
		}
		dep.WriteString(m.path + ":")
		for _, d := range m.deps {
			dep.WriteString(" " + d)
		}
		dep.WriteString("\n")
	}
	mustWrite(t, filepath.Join(md, "modules.dep"), dep.String())
	mustWrite(t, filepath.Join(md, "modules.builtin"), strings.Join(fakeBuiltin, "\n")+"\n")
	mustWrite(t, filepath.Join(dir, "boot", "vmlinuz-"+testKver), "kernel")
}

func mustWrite(t testing.TB, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fakeRoot(t testing.TB) fs.FS {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, "lib/modules/"+testKver)
	return os.DirFS(dir)
}

var fakeInit = []byte("#!kiln-init stand-in\n")

// readArchive returns every member's data keyed by name, checking each
// invariant Build promises on the way.
func readArchive(t *testing.T, archive []byte) ([]Entry, map[string][]byte) {
	t.Helper()
	data := map[string][]byte{}
	var ents []Entry
	err := Walk(bytes.NewReader(archive), func(e Entry, r io.Reader) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if int64(len(b)) != e.Size && e.Mode.IsRegular() {
			return fmt.Errorf("%s: read %d bytes, header says %d", e.Name, len(b), e.Size)
		}
		ents = append(ents, e)
		data[e.Name] = b
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return ents, data
}

func TestBuildModules(t *testing.T) {
	root := fakeRoot(t)
	tests := []struct {
		name    string
		modules []string
		packed  []string // load order
		builtin []string
		missing []string
	}{
		{
			name:    "closure in load order",
			modules: []string{"virtio_net"},
			packed:  []string{"virtio", "virtio_ring", "failover", "net_failover", "virtio_net"},
		},
		{
			name:    "shared deps packed once",
			modules: []string{"virtio_pci", "virtio_net"},
			packed: []string{"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
				"virtio_pci", "failover", "net_failover", "virtio_net"},
		},
		{
			name:    "dash and underscore alike",
			modules: []string{"mlx5_core", "virtio-pci-legacy-dev"},
			packed:  []string{"mlx5_core", "virtio_pci_legacy_dev"},
		},
		{
			name:    "missing and builtin are skipped",
			modules: []string{"loop", "e1000e", "ext4", "af-packet", "nosuch"},
			packed:  []string{"loop"},
			builtin: []string{"af_packet", "ext4"},
			missing: []string{"e1000e", "nosuch"},
		},
		{
			name:    "empty list packs nothing",
			modules: []string{},
		},
		{
			name:    "nil means defaults",
			modules: nil,
			packed: []string{"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
				"virtio_pci", "failover", "net_failover", "virtio_net", "mlx5_core", "loop", "squashfs", "overlay"},
			builtin: []string{"af_packet", "ext4"},
			missing: func() []string {
				var m []string
				have := map[string]bool{"virtio": true, "virtio_ring": true, "virtio_pci": true,
					"virtio_pci_modern_dev": true, "virtio_pci_legacy_dev": true, "virtio_net": true,
					"mlx5_core": true, "loop": true, "squashfs": true, "overlay": true, "af_packet": true, "ext4": true}
				for _, n := range DefaultModules() {
					if !have[n] {
						m = append(m, n)
					}
				}
				sort.Strings(m)
				return m
			}(),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			res, err := Build(&buf, Options{Init: fakeInit, Root: root, KernelVersion: testKver, Modules: tc.modules})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			var got []string
			for _, m := range res.Modules {
				got = append(got, m.Name)
			}
			if !reflect.DeepEqual(got, tc.packed) {
				t.Errorf("packed %v, want %v", got, tc.packed)
			}
			if !reflect.DeepEqual(res.Builtin, nilIfEmpty(tc.builtin)) && !(len(res.Builtin) == 0 && len(tc.builtin) == 0) {
				t.Errorf("builtin %v, want %v", res.Builtin, tc.builtin)
			}
			if !reflect.DeepEqual(res.Missing, tc.missing) && !(len(res.Missing) == 0 && len(tc.missing) == 0) {
				t.Errorf("missing %v, want %v", res.Missing, tc.missing)
			}
			if res.Size != int64(buf.Len()) {
				t.Errorf("Result.Size %d, wrote %d", res.Size, buf.Len())
			}

			ents, data := readArchive(t, buf.Bytes())
			if res.Entries != len(ents) {
				t.Errorf("Result.Entries %d, archive has %d", res.Entries, len(ents))
			}
			md := "lib/modules/" + testKver + "/"
			var sum int64
			var order strings.Builder
			for _, m := range res.Modules {
				b, ok := data[md+m.Path]
				if !ok {
					t.Errorf("%s not in archive", m.Path)
					continue
				}
				if !strings.HasSuffix(m.Path, ".ko") {
					t.Errorf("%s: packed path not plain .ko", m.Path)
				}
				if want := moduleContent(m.Path); !bytes.Equal(b, want) {
					t.Errorf("%s: content not the decompressed module (%d bytes, want %d)", m.Path, len(b), len(want))
				}
				if m.Size != int64(len(b)) {
					t.Errorf("%s: Result size %d, archive %d", m.Name, m.Size, len(b))
				}
				sum += m.Size
				order.WriteString(m.Path + "\n")
			}
			if sum != res.ModulesSize {
				t.Errorf("ModulesSize %d, sum %d", res.ModulesSize, sum)
			}
			// Nothing but the packed modules.
			var kos int
			for n := range data {
				if strings.Contains(n, ".ko") {
					kos++
				}
			}
			if kos != len(res.Modules) {
				t.Errorf("archive has %d module files, Result lists %d", kos, len(res.Modules))
			}
			if got := string(data[md+"modules.order"]); got != order.String() {
				t.Errorf("modules.order:\n%s\nwant:\n%s", got, order.String())
			}
			checkDepFile(t, data[md+"modules.dep"], res.Modules)
		})
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// checkDepFile checks that modules.dep names exactly the packed modules, each
// with its packed dependencies, and that loading modules.order satisfies it.
func checkDepFile(t *testing.T, dep []byte, mods []Module) {
	t.Helper()
	g, err := parseModulesDep(dep, testKver)
	if err != nil {
		t.Fatalf("packed modules.dep does not parse: %v", err)
	}
	if len(g) != len(mods) {
		t.Errorf("modules.dep has %d lines, %d modules packed", len(g), len(mods))
	}
	loaded := map[string]bool{}
	for _, m := range mods {
		e, ok := g[m.Name]
		if !ok {
			t.Errorf("modules.dep lacks %s", m.Name)
			continue
		}
		if e.path != m.Path {
			t.Errorf("modules.dep path %s, packed %s", e.path, m.Path)
		}
		for _, d := range e.deps {
			if !loaded[d] {
				t.Errorf("%s loaded before its dependency %s", m.Name, d)
			}
		}
		loaded[m.Name] = true
	}
}

func TestModulesDepGolden(t *testing.T) {
	var buf bytes.Buffer
	_, err := Build(&buf, Options{Init: fakeInit, Root: fakeRoot(t), KernelVersion: testKver,
		Modules: []string{"virtio_net", "virtio_pci", "squashfs", "overlay", "loop"}})
	if err != nil {
		t.Fatal(err)
	}
	_, data := readArchive(t, buf.Bytes())
	got := data["lib/modules/"+testKver+"/modules.dep"]
	golden := filepath.Join("testdata", "modules.dep.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("modules.dep:\n%s\nwant:\n%s", got, want)
	}
}

func TestArchiveLayout(t *testing.T) {
	var buf bytes.Buffer
	res, err := Build(&buf, Options{Init: fakeInit, Root: fakeRoot(t), KernelVersion: testKver, Modules: []string{"virtio_net"}})
	if err != nil {
		t.Fatal(err)
	}
	// gzip header: no name, mtime 0.
	zr, err := gzip.NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() || zr.Comment != "" {
		t.Errorf("gzip header name=%q mtime=%v comment=%q", zr.Name, zr.ModTime, zr.Comment)
	}
	if buf.Bytes()[4]|buf.Bytes()[5]|buf.Bytes()[6]|buf.Bytes()[7] != 0 {
		t.Errorf("gzip MTIME bytes not zero: % x", buf.Bytes()[4:8])
	}
	ents, data := readArchive(t, buf.Bytes())
	byName := map[string]Entry{}
	for i, e := range ents {
		byName[e.Name] = e
		if e.UID != 0 || e.GID != 0 || e.MTime != 0 {
			t.Errorf("%s: uid %d gid %d mtime %d", e.Name, e.UID, e.GID, e.MTime)
		}
		if e.Ino != uint32(i+1) {
			t.Errorf("%s: inode %d, want %d", e.Name, e.Ino, i+1)
		}
		if i > 0 && ents[i-1].Name >= e.Name {
			t.Errorf("not sorted: %s before %s", ents[i-1].Name, e.Name)
		}
	}
	for _, e := range ents {
		for d := filepath.Dir(e.Name); d != "."; d = filepath.Dir(d) {
			if p, ok := byName[d]; !ok || !p.Mode.IsDir() {
				t.Errorf("%s: parent %s missing", e.Name, d)
			}
		}
	}
	want := map[string]fs.FileMode{
		"init":        0o755,
		"dev":         fs.ModeDir | 0o755,
		"dev/console": fs.ModeDevice | fs.ModeCharDevice | 0o600,
		"proc":        fs.ModeDir | 0o555,
		"sys":         fs.ModeDir | 0o555,
		"run":         fs.ModeDir | 0o755,
		"newroot":     fs.ModeDir | 0o755,
		"lib/modules/" + testKver + "/kernel/drivers/net/virtio_net.ko": 0o644,
	}
	for n, m := range want {
		e, ok := byName[n]
		if !ok {
			t.Errorf("%s missing", n)
			continue
		}
		if e.Mode != m {
			t.Errorf("%s: mode %v, want %v", n, e.Mode, m)
		}
	}
	if c := byName["dev/console"]; c.RDevMajor != 5 || c.RDevMinor != 1 {
		t.Errorf("dev/console is %d,%d, want 5,1", c.RDevMajor, c.RDevMinor)
	}
	if !bytes.Equal(data["init"], fakeInit) || res.InitSize != int64(len(fakeInit)) {
		t.Errorf("init content/size wrong")
	}
	if res.ArchiveSize%512 == 0 && res.ArchiveSize == 0 {
		t.Errorf("ArchiveSize %d", res.ArchiveSize)
	}
}

func TestReproducible(t *testing.T) {
	// Two trees built separately (different inodes, mtimes, directory
	// order on disk) must give the same bytes, and so must a rebuild.
	a, b := fakeRoot(t), fakeRoot(t)
	opt := Options{Init: fakeInit, KernelVersion: testKver}
	var out [3]bytes.Buffer
	for i, root := range []fs.FS{a, b, a} {
		opt.Root = root
		if _, err := Build(&out[i], opt); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < len(out); i++ {
		if !bytes.Equal(out[0].Bytes(), out[i].Bytes()) {
			t.Errorf("build %d differs from build 0 (%d vs %d bytes)", i, out[i].Len(), out[0].Len())
		}
	}
	// And a different input does change the output.
	opt.Init = []byte("other init")
	var other bytes.Buffer
	if _, err := Build(&other, opt); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.Bytes(), out[0].Bytes()) {
		t.Error("different Init gave identical output")
	}
}

func TestBuildErrors(t *testing.T) {
	root := fakeRoot(t)
	noDep := t.TempDir()
	mustWrite(t, filepath.Join(noDep, "lib/modules", testKver, "kernel/x.ko"), "x")
	fileKver := t.TempDir()
	mustWrite(t, filepath.Join(fileKver, "lib/modules", testKver), "not a dir")
	badDep := t.TempDir()
	mustWrite(t, filepath.Join(badDep, "lib/modules", testKver, "modules.dep"), "kernel/x.ko no colon\n")
	badKo := t.TempDir()
	mustWrite(t, filepath.Join(badKo, "lib/modules", testKver, "modules.dep"), "kernel/x.ko.xz:\n")
	mustWrite(t, filepath.Join(badKo, "lib/modules", testKver, "kernel/x.ko.xz"), "not xz at all")

	tests := []struct {
		name    string
		opt     Options
		is      error
		mention string
	}{
		{"no init", Options{Root: root, KernelVersion: testKver}, ErrInvalidOptions, "Init"},
		{"no root", Options{Init: fakeInit, KernelVersion: testKver}, ErrInvalidOptions, "Root"},
		{"no kver", Options{Init: fakeInit, Root: root}, ErrInvalidOptions, "KernelVersion"},
		{"kver with slash", Options{Init: fakeInit, Root: root, KernelVersion: "../x"}, ErrInvalidOptions, "KernelVersion"},
		{"bad level", Options{Init: fakeInit, Root: root, KernelVersion: testKver, Level: 42}, ErrInvalidOptions, "Level"},
		{"missing kver", Options{Init: fakeInit, Root: root, KernelVersion: "6.6.6-nope"}, ErrKernelNotFound, "/lib/modules/6.6.6-nope"},
		{"kver is a file", Options{Init: fakeInit, Root: os.DirFS(fileKver), KernelVersion: testKver}, ErrKernelNotFound, "/lib/modules/" + testKver},
		{"no modules.dep", Options{Init: fakeInit, Root: os.DirFS(noDep), KernelVersion: testKver}, ErrKernelNotFound, "modules.dep"},
		{"bad modules.dep", Options{Init: fakeInit, Root: os.DirFS(badDep), KernelVersion: testKver}, ErrModule, "line 1"},
		{"corrupt module", Options{Init: fakeInit, Root: os.DirFS(badKo), KernelVersion: testKver, Modules: []string{"x"}}, ErrModule, "kernel/x.ko.xz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(io.Discard, tc.opt)
			if !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

// TestSymlinkedModules covers a merged-/usr image (lib -> usr/lib) with an
// absolute link target: it must resolve inside the image root, never on the
// host.
func TestSymlinkedModules(t *testing.T) {
	for _, target := range []string{"usr/lib", "/usr/lib", "/usr/../usr/lib"} {
		t.Run(target, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, "usr/lib/modules/"+testKver)
			if err := os.Symlink(target, filepath.Join(dir, "lib")); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			res, err := Build(&buf, Options{Init: fakeInit, Root: os.DirFS(dir), KernelVersion: testKver, Modules: []string{"virtio_net"}})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if len(res.Modules) != 5 {
				t.Errorf("packed %d modules, want 5", len(res.Modules))
			}
			ks, err := findKernels(os.DirFS(dir))
			if err != nil || len(ks) != 1 || ks[0].Version != testKver {
				t.Errorf("findKernels = %v, %v", ks, err)
			}
		})
	}
}

func TestFindKernelsHelper(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, "lib/modules/"+testKver)
	mustWrite(t, filepath.Join(dir, "boot", "vmlinuz-4.0.0-nomods"), "k")
	mustWrite(t, filepath.Join(dir, "lib/modules/3.0.0-a/modules.dep"), "")
	mustWrite(t, filepath.Join(dir, "boot", "vmlinuz-3.0.0-a"), "k")
	mustWrite(t, filepath.Join(dir, "boot", "config-3.0.0-a"), "k")
	got, err := findKernels(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	want := []kernel{{"3.0.0-a", "boot/vmlinuz-3.0.0-a"}, {testKver, "boot/vmlinuz-" + testKver}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("findKernels = %v, want %v", got, want)
	}
	got, err = findKernels(os.DirFS(t.TempDir()))
	if err != nil || len(got) != 0 {
		t.Errorf("empty root: %v, %v", got, err)
	}
}

func TestListCorrupt(t *testing.T) {
	var good bytes.Buffer
	if _, err := Build(&good, Options{Init: fakeInit, Root: fakeRoot(t), KernelVersion: testKver, Modules: []string{}}); err != nil {
		t.Fatal(err)
	}
	raw := gunzip(t, good.Bytes())
	badMagic := append([]byte("070707"), raw[6:]...)
	tests := []struct {
		name string
		in   []byte
	}{
		{"not gzip", raw},
		{"truncated cpio", gz(t, raw[:len(raw)/2])},
		{"bad magic", gz(t, badMagic)},
		{"no trailer", gz(t, raw[:len(raw)-124])},
		{"empty", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := List(bytes.NewReader(tc.in))
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("List err = %v, want ErrCorrupt", err)
			}
		})
	}
	ents, err := List(bytes.NewReader(good.Bytes()))
	if err != nil || len(ents) == 0 {
		t.Fatalf("List(good) = %d entries, %v", len(ents), err)
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}
