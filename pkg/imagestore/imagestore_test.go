package imagestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/initramfs"
	"github.com/immutableinfra/kiln/pkg/store"
	"github.com/immutableinfra/kiln/pkg/testtool"
)

const kver = "6.1.0-99-test"

// makeImage builds a real squashfs from files (path -> content; a value
// starting with "->" is a symlink) and returns its path.
func makeImage(t *testing.T, files map[string]string) string {
	t.Helper()
	mk := testtool.Need(t, "mksquashfs")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "rootfs.squashfs")
	if b, err := exec.Command(mk, root, out, "-comp", "gzip", "-noappend", "-quiet", "-all-root").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, b)
	}
	return out
}

func bootable(release string) map[string]string {
	return map[string]string{
		"boot/vmlinuz-" + kver:                                        "KERNEL " + kver,
		"vmlinuz":                                                     "->boot/vmlinuz-" + kver,
		"lib/modules/" + kver + "/modules.dep":                        "kernel/fs/squashfs/squashfs.ko:\nkernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko\nkernel/drivers/net/net_failover.ko:\n",
		"lib/modules/" + kver + "/modules.builtin":                    "kernel/fs/overlayfs/overlay.ko\n",
		"lib/modules/" + kver + "/kernel/fs/squashfs/squashfs.ko":     "\x7fELF squashfs",
		"lib/modules/" + kver + "/kernel/drivers/net/virtio_net.ko":   "\x7fELF virtio_net",
		"lib/modules/" + kver + "/kernel/drivers/net/net_failover.ko": "\x7fELF net_failover",
		"etc/kiln-release":                                            release,
		"sbin/init":                                                   "#!/bin/sh\n",
	}
}

type env struct {
	st   *store.Store
	is   *Store
	dir  string
	now  time.Time
	init []byte
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), now: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), init: []byte("\x7fELF kiln-init")}
	clock := func() time.Time { e.now = e.now.Add(time.Minute); return e.now }
	st, err := store.Open(filepath.Join(e.dir, "kiln.db"), store.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	is, err := New(Config{Dir: filepath.Join(e.dir, "blobs"), Now: clock, KilnInit: func() ([]byte, error) { return e.init, nil }}, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.st, e.is = st, is
	return e
}

func sha(b []byte) fleet.Digest {
	s := sha256.Sum256(b)
	return fleet.Digest("sha256:" + hex.EncodeToString(s[:]))
}

func (e *env) importFile(t *testing.T, ref, path string, mod func(*ImportRequest)) (fleet.Image, bool, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req := ImportRequest{Ref: ref, Rootfs: f, Cmdline: "console=ttyS0"}
	if mod != nil {
		mod(&req)
	}
	return e.is.Import(context.Background(), req)
}

// blobFiles lists what is on disk under the blob and temp dirs.
func (e *env) blobFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, g := range []string{"sha256/*", "tmp/*"} {
		m, _ := filepath.Glob(filepath.Join(e.dir, "blobs", g))
		for _, f := range m {
			out = append(out, strings.TrimPrefix(f, filepath.Join(e.dir, "blobs")+"/"))
		}
	}
	return out
}

func TestImportFindsKernelAndBuildsInitrd(t *testing.T) {
	e := newEnv(t)
	path := makeImage(t, bootable("1"))
	img, created, err := e.importFile(t, "test@1", path, nil)
	if err != nil || !created {
		t.Fatalf("import: created=%v err=%v", created, err)
	}
	raw, _ := os.ReadFile(path)
	if img.Rootfs.Digest != sha(raw) || img.Rootfs.Size != int64(len(raw)) {
		t.Errorf("rootfs artifact %+v does not match the file", img.Rootfs)
	}
	if img.Kernel.Digest != sha([]byte("KERNEL "+kver)) || img.KernelPath != "boot/vmlinuz-"+kver || img.KernelVersion != kver {
		t.Errorf("kernel: %+v path %q version %q", img.Kernel, img.KernelPath, img.KernelVersion)
	}
	if !img.InitrdBuilt || img.Initrd.IsZero() {
		t.Fatalf("initrd not built: %+v", img)
	}
	// The built initramfs carries kiln-init and the image's modules.
	f, err := e.is.Open(img.Initrd.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, err := initramfs.List(f)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name)
	}
	all := strings.Join(names, " ")
	for _, want := range []string{"init", "lib/modules/" + kver + "/kernel/drivers/net/virtio_net.ko", "lib/modules/" + kver + "/kernel/drivers/net/net_failover.ko", "lib/modules/" + kver + "/modules.dep"} {
		if !strings.Contains(all, want) {
			t.Errorf("initramfs lacks %s: %s", want, all)
		}
	}
	for _, d := range img.Digests() {
		if err := e.is.Verify(d); err != nil {
			t.Error(err)
		}
	}
	// Same image again: a no-op, the same manifest, the same initrd digest.
	again, created, err := e.importFile(t, "test@1", path, nil)
	if err != nil || created || again.Initrd != img.Initrd || !again.Created.Equal(img.Created) {
		t.Fatalf("re-import: created=%v err=%v initrd %v vs %v", created, err, again.Initrd, img.Initrd)
	}
	// Other content under the same version: refused, and nothing new on disk.
	before := e.blobFiles(t)
	if _, _, err := e.importFile(t, "test@1", makeImage(t, bootable("2")), nil); !errors.Is(err, fleet.ErrConflict) {
		t.Fatalf("conflicting re-import: %v", err)
	}
	if after := e.blobFiles(t); len(after) != len(before) {
		t.Fatalf("conflicting import left files: %v -> %v", before, after)
	}
	// A second version shares the kernel blob: stored once.
	img2, _, err := e.importFile(t, "test@2", makeImage(t, bootable("2")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if img2.Kernel != img.Kernel {
		t.Fatalf("kernel differs between versions")
	}
	if latest, _ := e.st.Image(context.Background(), "test@latest"); latest.Ref != "test@2" {
		t.Fatalf("latest = %s", latest.Ref)
	}
}

type failingReader struct {
	r     io.Reader
	after int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("connection reset by peer")
	}
	if len(p) > f.after {
		p = p[:f.after]
	}
	n, err := f.r.Read(p)
	f.after -= n
	return n, err
}

func TestImportRefused(t *testing.T) {
	noKernel := bootable("1")
	delete(noKernel, "boot/vmlinuz-"+kver)
	delete(noKernel, "vmlinuz")
	tests := []struct {
		name    string
		files   map[string]string
		ref     string
		mod     func(*ImportRequest)
		want    error
		message string
	}{
		{name: "not a squashfs", ref: "x@1", mod: func(r *ImportRequest) { r.Rootfs = strings.NewReader(strings.Repeat("not squashfs ", 1000)) }, want: ErrNotSquashfs, message: "not a squashfs"},
		{name: "no kernel", files: noKernel, ref: "x@1", want: ErrNoKernel, message: "no --kernel was given"},
		{name: "latest is no version", files: bootable("1"), ref: "x@latest", want: fleet.ErrInvalid},
		{name: "bad name", files: bootable("1"), ref: "X Y@1", want: fleet.ErrInvalid},
		{name: "bad arch", files: bootable("1"), ref: "x@1", mod: func(r *ImportRequest) { r.Arch = "sparc" }, want: fleet.ErrInvalid},
		{name: "upload cut", files: bootable("1"), ref: "x@1", mod: func(r *ImportRequest) { r.Rootfs = &failingReader{r: r.Rootfs, after: 4096} }, message: "connection reset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			path := makeImage(t, map[string]string{"a": "b"})
			if tc.files != nil {
				path = makeImage(t, tc.files)
			}
			_, _, err := e.importFile(t, tc.ref, path, tc.mod)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.message)
			}
			if files := e.blobFiles(t); len(files) != 0 {
				t.Fatalf("refused import left files: %v", files)
			}
			if imgs, _ := e.st.ListImages(context.Background()); len(imgs) != 0 {
				t.Fatalf("refused import left a manifest: %v", imgs)
			}
		})
	}
}

func TestImportWithKernelAndInitrdGiven(t *testing.T) {
	e := newEnv(t)
	path := makeImage(t, map[string]string{"sbin/init": "x"})
	img, _, err := e.importFile(t, "bare@1", path, func(r *ImportRequest) {
		r.Kernel = strings.NewReader("my kernel")
		r.Initrd = strings.NewReader("my initrd")
	})
	if err != nil {
		t.Fatal(err)
	}
	if img.Kernel.Digest != sha([]byte("my kernel")) || img.Initrd.Digest != sha([]byte("my initrd")) || img.InitrdBuilt {
		t.Fatalf("%+v", img)
	}
}

func TestRemoveAndGC(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	for _, v := range []string{"1", "2", "3"} {
		if _, _, err := e.importFile(t, "test@"+v, makeImage(t, bootable(v)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.st.CreateHost(ctx, fleet.Host{Name: "h1", MACs: []string{"52:54:00:00:00:01"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Assign(ctx, []string{"h1"}, "test@1", "t", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.is.Remove(ctx, "test@1"); !errors.Is(err, fleet.ErrInUse) || !strings.Contains(err.Error(), "h1") {
		t.Fatalf("remove assigned image: %v", err)
	}
	// An orphan blob (an import that crashed between blob and manifest).
	orphan := filepath.Join(e.dir, "blobs", "sha256", strings.Repeat("ab", 32))
	os.WriteFile(orphan, []byte("orphan"), 0o444)

	dry, err := e.is.GC(ctx, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(dry.Images, ",") != "test@2" || len(dry.OrphanBlobs) != 1 || dry.BytesFreed == 0 || len(dry.Kept) != 1 {
		t.Fatalf("dry run: %+v", dry)
	}
	if _, err := os.Stat(orphan); err != nil {
		t.Fatal("dry run removed the orphan")
	}
	res, err := e.is.GC(ctx, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Images, ",") != "test@2" || res.BytesFreed != dry.BytesFreed {
		t.Fatalf("gc: %+v (dry run said %+v)", res, dry)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("gc kept the orphan")
	}
	imgs, _ := e.st.ListImages(ctx)
	var refs []string
	for _, im := range imgs {
		refs = append(refs, im.Ref)
		for _, d := range im.Digests() {
			if err := e.is.Verify(d); err != nil {
				t.Errorf("gc broke %s: %v", im.Ref, err)
			}
		}
	}
	if strings.Join(refs, ",") != "test@1,test@3" {
		t.Fatalf("images after gc: %v", refs)
	}
}

func TestVerifyDetectsCorruption(t *testing.T) {
	e := newEnv(t)
	img, _, err := e.importFile(t, "test@1", makeImage(t, bootable("1")), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := e.is.Path(img.Rootfs.Digest)
	os.Chmod(p, 0o644)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0xff
	os.WriteFile(p, b, 0o644)
	if err := e.is.Verify(img.Rootfs.Digest); !errors.Is(err, ErrCorruptBlob) {
		t.Fatalf("verify corrupted: %v", err)
	}
}
