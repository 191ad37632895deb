package initramfs

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/immutableinfra/kiln/pkg/fspath"
)

// kernel is a kernel found in an image root by findKernels (a test helper;
// kilnd uses squashfs.FindKernel).
type kernel struct {
	// Version is the kernel release, the name of its lib/modules directory.
	Version string
	// Image is the path of the kernel image in the root, "boot/vmlinuz-<Version>".
	Image string
}

// findKernels lists the kernels in an image root: every boot/vmlinuz-<kver>
// for which lib/modules/<kver> exists, sorted by version string. An image
// with no kernel yields an empty slice and no error; an unreadable boot
// directory is an error.
func findKernels(root fs.FS) ([]kernel, error) {
	bootDir, err := fspath.Realpath(root, "boot")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("initramfs: /boot: %w", err)
	}
	ents, err := fs.ReadDir(root, bootDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("initramfs: /boot: %w", err)
	}
	var out []kernel
	for _, e := range ents {
		kver, ok := strings.CutPrefix(e.Name(), "vmlinuz-")
		if !ok || kver == "" {
			continue
		}
		md, err := fspath.Realpath(root, "lib/modules/"+kver)
		if err != nil {
			continue
		}
		if fi, err := fs.Stat(root, md); err != nil || !fi.IsDir() {
			continue
		}
		out = append(out, kernel{Version: kver, Image: "boot/" + e.Name()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
