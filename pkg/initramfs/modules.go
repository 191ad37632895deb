package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultModules returns the kernel modules a netboot initramfs carries when
// Options.Modules is nil: the NIC drivers common in servers and VMs, the
// virtio transports, what kiln-init needs to mount the image (loop, squashfs,
// overlay) and what it needs to find a kiln-state partition (block drivers,
// ext4). It holds only modules that load (finit_module returns 0) on any
// x86-64 machine or VM whether or not their hardware is present, since
// kiln-init loads every packed module: no hypervisor bus drivers (hv_vmbus,
// xen-netfront) and no CPU-feature modules (crc32c-intel), which fail with
// ENODEV where they do not apply. Names absent from an image or built into
// its kernel are skipped by Build and reported in Result. Each call returns
// a new slice.
func DefaultModules() []string {
	return []string{
		// virtio transports and devices
		"virtio", "virtio_ring", "virtio_pci", "virtio_pci_modern_dev",
		"virtio_pci_legacy_dev", "virtio_net", "virtio_blk", "virtio_scsi",
		// NICs: Intel, Broadcom, Mellanox, Realtek, VMware, cloud
		"e1000", "e1000e", "igb", "igc", "ixgbe", "ixgbevf", "i40e", "iavf", "ice",
		"bnxt_en", "tg3", "bnx2", "bnx2x", "mlx4_en", "mlx5_core",
		"r8169", "vmxnet3", "ena", "gve",
		// network plumbing kiln-init's DHCP client uses
		"af_packet",
		// image mounting
		"loop", "squashfs", "overlay",
		// kiln-state partition
		"sd_mod", "ahci", "nvme", "ext4",
	}
}

// normName maps a module name or file name to the kernel's canonical
// spelling: '-' and '_' are the same character to modprobe.
func normName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// compression suffixes of module files, longest first.
var koSuffixes = [...]string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"}

// moduleName returns the module name of a path in modules.dep or
// modules.builtin ("kernel/net/core/failover.ko.xz" -> "failover").
func moduleName(p string) string {
	b := path.Base(p)
	for _, s := range koSuffixes {
		if strings.HasSuffix(b, s) {
			return normName(strings.TrimSuffix(b, s))
		}
	}
	return normName(b)
}

// plainPath strips a compression suffix: "x.ko.zst" -> "x.ko".
func plainPath(p string) string {
	for _, s := range koSuffixes[:3] {
		if strings.HasSuffix(p, s) {
			return strings.TrimSuffix(p, s) + ".ko"
		}
	}
	return p
}

// depEntry is one line of modules.dep.
type depEntry struct {
	path string   // relative to lib/modules/<kver>, as in the image
	deps []string // module names, as listed
}

// depGraph is a parsed modules.dep keyed by normalised module name.
type depGraph map[string]depEntry

// parseModulesDep reads modules.dep. Paths may be relative (modern depmod)
// or absolute under /lib/modules/<kver>/ (old depmod); both come back
// relative.
func parseModulesDep(data []byte, kver string) (depGraph, error) {
	g := depGraph{}
	abs := "/lib/modules/" + kver + "/"
	rel := func(p string) string { return strings.TrimPrefix(p, abs) }
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		head, tail, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: missing ':'", ln)
		}
		p := rel(strings.TrimSpace(head))
		if !strings.Contains(path.Base(p), ".ko") || strings.HasPrefix(p, "/") || strings.Contains(p, "..") {
			return nil, fmt.Errorf("modules.dep line %d: bad module path %q", ln, p)
		}
		var deps []string
		for _, d := range strings.Fields(tail) {
			deps = append(deps, moduleName(rel(d)))
		}
		g[moduleName(p)] = depEntry{path: p, deps: deps}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	return g, nil
}

// parseBuiltin reads modules.builtin into a set of normalised names.
func parseBuiltin(data []byte) map[string]bool {
	set := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			set[moduleName(line)] = true
		}
	}
	return set
}

// closure resolves the requested names against g: it returns the modules to
// pack in load order (every module after all of its dependencies), requested
// ones in the order asked, plus the names that are built in and the names
// the image lacks (both normalised, sorted, deduplicated). A dependency that
// modules.dep names but does not list itself is reported as missing.
func closure(g depGraph, builtin map[string]bool, want []string) (order, inKernel, missing []string) {
	state := map[string]int{} // 1 visiting, 2 done
	miss := map[string]bool{}
	bi := map[string]bool{}
	var visit func(n string)
	visit = func(n string) {
		if state[n] != 0 { // done, or a cycle (depmod never writes one)
			return
		}
		e, ok := g[n]
		if !ok {
			if builtin[n] {
				bi[n] = true
			} else {
				miss[n] = true
			}
			return
		}
		state[n] = 1
		// modules.dep lists dependencies so that loading them last-to-first
		// works; visit in that order for a natural load order.
		for i := len(e.deps) - 1; i >= 0; i-- {
			visit(e.deps[i])
		}
		state[n] = 2
		order = append(order, n)
	}
	for _, w := range want {
		visit(normName(w))
	}
	return order, sortedKeys(bi), sortedKeys(miss)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// maxModuleSize bounds a decompressed module (the largest in-tree modules
// are a few tens of MiB).
const maxModuleSize = 256 << 20

// decompressModule returns the plain ELF contents of a module file named p.
func decompressModule(p string, data []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		r = xr
	case strings.HasSuffix(p, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r = gr
	default:
		return data, nil
	}
	out, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxModuleSize {
		return nil, fmt.Errorf("decompressed size exceeds %d bytes", maxModuleSize)
	}
	return out, nil
}

// writeModulesDep renders modules.dep for the packed modules: relative plain
// .ko paths, dependencies in the order depmod would list them (the one to
// load last first), one line per module, sorted by path.
func writeModulesDep(g depGraph, packed []string) []byte {
	type line struct{ path, text string }
	lines := make([]line, 0, len(packed))
	for _, n := range packed {
		e := g[n]
		var b strings.Builder
		b.WriteString(plainPath(e.path))
		b.WriteByte(':')
		for _, d := range e.deps {
			if de, ok := g[d]; ok {
				b.WriteByte(' ')
				b.WriteString(plainPath(de.path))
			}
		}
		lines = append(lines, line{plainPath(e.path), b.String()})
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].path < lines[j].path })
	var out bytes.Buffer
	for _, l := range lines {
		out.WriteString(l.text)
		out.WriteByte('\n')
	}
	return out.Bytes()
}
