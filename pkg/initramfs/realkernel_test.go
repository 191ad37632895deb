package initramfs

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// KernelRootEnv names an image root (a directory with boot/vmlinuz-<kver>
// and a depmod'ed lib/modules/<kver>) for the tests and benchmark that use a
// real kernel. Unset, they look for the staging tree `make -C images
// testimage` leaves in images/build, and skip when there is none.
const KernelRootEnv = "KILN_KERNEL_ROOT"

func realKernelRoot(tb testing.TB) (string, kernel) {
	tb.Helper()
	dirs := []string{os.Getenv(KernelRootEnv)}
	if dirs[0] == "" {
		dirs, _ = filepath.Glob("../../images/build/testimage-*.rootfs")
	}
	for _, d := range dirs {
		ks, err := findKernels(os.DirFS(d))
		if err == nil && len(ks) > 0 {
			return d, ks[len(ks)-1]
		}
	}
	tb.Skipf("no real kernel tree: set %s or run `make -C images testimage VERSION=1`", KernelRootEnv)
	return "", kernel{}
}

// TestRealKernel builds the default initramfs from a real Debian kernel and
// checks that it carries every module the testbed's QEMU hosts must load
// (docs TESTBED.md), as plain ELF files.
func TestRealKernel(t *testing.T) {
	dir, k := realKernelRoot(t)
	var buf bytes.Buffer
	res, err := Build(&buf, Options{Init: fakeInit, Root: os.DirFS(dir), KernelVersion: k.Version})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s: %d modules packed (%d bytes), builtin %v, missing %v; archive %d bytes, gzip %d bytes",
		k.Version, len(res.Modules), res.ModulesSize, res.Builtin, res.Missing, res.ArchiveSize, res.Size)
	packed := map[string]bool{}
	for _, m := range res.Modules {
		packed[m.Name] = true
	}
	for _, n := range []string{"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
		"failover", "net_failover", "virtio_net", "loop", "squashfs", "overlay"} {
		if !packed[n] {
			t.Errorf("%s not packed", n)
		}
	}
	err = Walk(bytes.NewReader(buf.Bytes()), func(e Entry, r io.Reader) error {
		if filepath.Ext(e.Name) != ".ko" {
			return nil
		}
		magic := make([]byte, 4)
		if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "\x7fELF" {
			t.Errorf("%s: not an ELF file (%q, %v)", e.Name, magic, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkBuildRealKernel measures Build with DefaultModules over a real
// kernel's module tree (the work kilnd does at image import).
func BenchmarkBuildRealKernel(b *testing.B) {
	dir, k := realKernelRoot(b)
	init := bytes.Repeat([]byte{0x90}, 8<<20) // a kiln-init-sized binary
	opt := Options{Init: init, Root: os.DirFS(dir), KernelVersion: k.Version}
	var size int64
	for b.Loop() {
		res, err := Build(io.Discard, opt)
		if err != nil {
			b.Fatal(err)
		}
		size = res.Size
	}
	b.ReportMetric(float64(size), "gzip-bytes")
}
