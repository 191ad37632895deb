package squashfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/immutableinfra/kiln/pkg/testtool"
)

func TestFindKernelMapFS(t *testing.T) {
	file := &fstest.MapFile{Data: []byte("kernel"), Mode: 0o644}
	link := func(target string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte(target), Mode: fs.ModeSymlink | 0o777}
	}
	dir := &fstest.MapFile{Mode: fs.ModeDir | 0o755}
	tests := []struct {
		name     string
		fsys     fstest.MapFS
		path     string
		kver     string
		wantErr  error
		errMatch string
	}{
		{
			name: "debian with /vmlinuz link",
			fsys: fstest.MapFS{
				"boot/vmlinuz-6.1.0-27-cloud-amd64": file,
				"vmlinuz":                           link("boot/vmlinuz-6.1.0-27-cloud-amd64"),
				"lib/modules/6.1.0-27-cloud-amd64":  dir,
			},
			path: "boot/vmlinuz-6.1.0-27-cloud-amd64", kver: "6.1.0-27-cloud-amd64",
		},
		{
			name: "newest of several, numerically",
			fsys: fstest.MapFS{
				"boot/vmlinuz-6.1.0-9-cloud-amd64":  file,
				"boot/vmlinuz-6.1.0-27-cloud-amd64": file,
				"boot/vmlinuz-6.1.0-10-cloud-amd64": file,
				"vmlinuz":                           link("boot/vmlinuz-6.1.0-9-cloud-amd64"),
			},
			path: "boot/vmlinuz-6.1.0-27-cloud-amd64", kver: "6.1.0-27-cloud-amd64",
		},
		{
			name: "6.10 newer than 6.9",
			fsys: fstest.MapFS{
				"boot/vmlinuz-6.9.12": file,
				"boot/vmlinuz-6.10.1": file,
			},
			path: "boot/vmlinuz-6.10.1", kver: "6.10.1",
		},
		{
			name: "bare vmlinuz, one modules dir",
			fsys: fstest.MapFS{
				"boot/vmlinuz":          file,
				"usr/lib/modules/6.6.3": dir,
				"lib":                   link("usr/lib"),
			},
			path: "boot/vmlinuz", kver: "6.6.3",
		},
		{
			name: "bare vmlinuz, two modules dirs",
			fsys: fstest.MapFS{
				"boot/vmlinuz":      file,
				"lib/modules/6.6.3": dir,
				"lib/modules/6.6.4": dir,
			},
			path: "boot/vmlinuz", kver: "",
		},
		{
			name: "absolute link from the root into boot",
			fsys: fstest.MapFS{
				"boot/vmlinuz-5.10.0-30-amd64": file,
				"vmlinuz":                      link("/boot/vmlinuz-5.10.0-30-amd64"),
				"boot/vmlinuz":                 link("vmlinuz-5.10.0-30-amd64"),
			},
			path: "boot/vmlinuz-5.10.0-30-amd64", kver: "5.10.0-30-amd64",
		},
		{
			name: "only a root symlink into an odd place",
			fsys: fstest.MapFS{
				"kernels/linux-6.1": file,
				"vmlinuz":           link("kernels/linux-6.1"),
			},
			path: "kernels/linux-6.1", kver: "",
		},
		{
			name: "dangling links and a directory are no kernel",
			fsys: fstest.MapFS{
				"vmlinuz":              link("boot/vmlinuz-gone"),
				"boot/vmlinuz-6.1.0-1": dir,
				"etc/hostname":         file,
			},
			wantErr: ErrNoKernel, errMatch: "/boot/vmlinuz-*",
		},
		{
			name:    "empty image",
			fsys:    fstest.MapFS{},
			wantErr: ErrNoKernel, errMatch: "/vmlinuz",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, v, err := FindKernel(tc.fsys)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("FindKernel error %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.errMatch) {
				t.Errorf("error %q does not mention %q", err, tc.errMatch)
			}
			if p != tc.path || v != tc.kver {
				t.Errorf("FindKernel = %q, %q; want %q, %q", p, v, tc.path, tc.kver)
			}
		})
	}
}

func TestFindKernelImage(t *testing.T) {
	testtool.Need(t, "mksquashfs")
	root := buildTree(t)
	fsys := openImage(t, mksquashfs(t, root, "-comp", "zstd"))
	p, v, err := FindKernel(fsys)
	if err != nil || p != "boot/vmlinuz-"+kver || v != kver {
		t.Fatalf("FindKernel = %q, %q, %v", p, v, err)
	}
	// The modules of that kernel are reachable through the lib symlink.
	if _, err := fs.ReadFile(fsys, "lib/modules/"+v+"/modules.dep"); err != nil {
		t.Error(err)
	}
	// An image without a kernel.
	empty := t.TempDir()
	os.WriteFile(filepath.Join(empty, "etc"), []byte("x"), 0o644)
	if _, _, err := FindKernel(openImage(t, mksquashfs(t, empty))); !errors.Is(err, ErrNoKernel) {
		t.Errorf("FindKernel on an image without kernel: %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"6.1.0-27-cloud-amd64", "6.1.0-9-cloud-amd64", 1},
		{"6.10.0", "6.9.0", 1},
		{"6.1.0", "6.1.0", 0},
		{"6.1.0", "6.1.0-1", -1},
		{"6.1.0~rc1", "6.1.0", -1},
		{"5.10.0-30-amd64", "6.1.0-1-amd64", -1},
		{"6.1.007", "6.1.7", 0},
		{"6.1a", "6.1b", -1},
	}
	for _, tc := range tests {
		t.Run(tc.a+"_vs_"+tc.b, func(t *testing.T) {
			if got := compareVersions(tc.a, tc.b); got != tc.want {
				t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
			if got := compareVersions(tc.b, tc.a); got != -tc.want {
				t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
			}
		})
	}
}
