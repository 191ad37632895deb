// Package initramfs builds kiln's netboot initramfs for an image: the
// kiln-init binary as /init plus the kernel modules taken from the image's own
// /lib/modules/<kver>, packed as a reproducible gzip-compressed newc cpio
// archive (the format the Linux kernel unpacks into its rootfs).
//
// The archive holds, in sorted order with every parent directory present:
//
//	init                              0755, the kiln-init binary
//	dev/ dev/console                  char device 5,1 (0600), so the kernel can
//	                                  open a console before devtmpfs is mounted
//	proc/ sys/ run/ newroot/          empty mount points
//	lib/modules/<kver>/kernel/...     the packed modules, decompressed to .ko
//	lib/modules/<kver>/modules.dep    depmod format, relative plain .ko paths,
//	                                  for exactly the packed modules
//	lib/modules/<kver>/modules.order  the packed modules' paths, one a line,
//	                                  each after all of its dependencies: loading
//	                                  them in this order always works
//	lib/modules/<kver>/modules.builtin copied from the image when present
//
// Every header has uid/gid 0, mtime 0 and inode numbers 1, 2, 3... in archive
// order; the gzip header carries no name and mtime 0. The same inputs give
// byte-identical output.
package initramfs

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/immutableinfra/kiln/pkg/fspath"
)

// Errors returned by this package, to be checked with errors.Is.
var (
	// ErrInvalidOptions reports an Options field that is missing or
	// malformed; the message names the field.
	ErrInvalidOptions = errors.New("initramfs: invalid options")
	// ErrKernelNotFound reports that the image has no lib/modules/<kver>
	// directory (or no modules.dep in it) for the requested kernel version.
	ErrKernelNotFound = errors.New("initramfs: kernel modules not found in image")
	// ErrModule reports a module file that is listed in modules.dep but
	// cannot be read or decompressed.
	ErrModule = errors.New("initramfs: bad module")
	// ErrCorrupt reports an archive that List or Walk cannot parse.
	ErrCorrupt = errors.New("initramfs: corrupt archive")
)

// Options says what to pack. Init, Root and KernelVersion are required.
type Options struct {
	// Init is the kiln-init binary, packed as /init (mode 0755).
	Init []byte
	// Root is the image's root filesystem. Symlinks inside it (e.g. a
	// merged-/usr image's lib -> usr/lib) are followed within Root when it
	// implements fs.ReadLinkFS; absolute link targets are taken relative to
	// Root, never to the host.
	Root fs.FS
	// KernelVersion names the directory lib/modules/<KernelVersion> in Root,
	// e.g. "6.1.0-56-cloud-amd64". It must be a single path element.
	KernelVersion string
	// Modules lists the module names to include, with their dependency
	// closure ('-' and '_' are the same). nil means DefaultModules(); an
	// empty non-nil slice packs no modules.
	Modules []string
	// Level is the gzip compression level; 0 means gzip.DefaultCompression.
	// Values outside gzip.HuffmanOnly..gzip.BestCompression are an error.
	Level int
}

// Module describes one packed kernel module.
type Module struct {
	// Name is the canonical module name ('_' spelling).
	Name string
	// Path is the packed file, relative to lib/modules/<kver> (always .ko).
	Path string
	// Source is the file it was read from in the image (may be compressed).
	Source string
	// Size is the packed (decompressed) size in bytes.
	Size int64
	// Requested is true when the name was asked for, false when it was
	// pulled in only as a dependency.
	Requested bool
}

// Result reports what Build packed.
type Result struct {
	// KernelVersion is Options.KernelVersion.
	KernelVersion string
	// Modules lists the packed modules in load order (dependencies first).
	Modules []Module
	// Builtin lists requested names (or dependencies) built into the kernel
	// according to modules.builtin; nothing is packed for them.
	Builtin []string
	// Missing lists requested names (or dependencies named by modules.dep)
	// that the image does not have; they are skipped, not an error.
	Missing []string
	// Entries is the number of archive members, trailer excluded.
	Entries int
	// InitSize is the size of /init in bytes.
	InitSize int64
	// ModulesSize is the total size of the packed .ko files in bytes.
	ModulesSize int64
	// ArchiveSize is the size of the uncompressed cpio archive in bytes.
	ArchiveSize int64
	// Size is the number of compressed bytes written to w.
	Size int64
}

func (o Options) validate() error {
	switch {
	case len(o.Init) == 0:
		return fmt.Errorf("%w: Init: empty kiln-init binary", ErrInvalidOptions)
	case o.Root == nil:
		return fmt.Errorf("%w: Root: nil", ErrInvalidOptions)
	case o.KernelVersion == "" || o.KernelVersion == "." || o.KernelVersion == ".." ||
		strings.ContainsAny(o.KernelVersion, "/\x00 \n"):
		return fmt.Errorf("%w: KernelVersion: %q is not a kernel release", ErrInvalidOptions, o.KernelVersion)
	case o.Level < gzip.HuffmanOnly || o.Level > gzip.BestCompression:
		return fmt.Errorf("%w: Level: %d out of range", ErrInvalidOptions, o.Level)
	}
	return nil
}

// member is one archive entry to write; data is produced lazily so only one
// decompressed module is in memory at a time.
type member struct {
	name  string
	kind  uint32 // sIFDIR, sIFREG, sIFCHR
	perm  uint32
	major uint32
	minor uint32
	data  func() ([]byte, error)
}

// Build writes the initramfs for opt to w and reports what it packed. The
// output is a gzip-compressed newc cpio archive; see the package doc for its
// layout. A module named in opt.Modules that the image lacks is skipped and
// listed in Result.Missing; a missing lib/modules/<kver> directory is an
// error wrapping ErrKernelNotFound that names the path. On error, w may
// have received a partial archive.
func Build(w io.Writer, opt Options) (Result, error) {
	if err := opt.validate(); err != nil {
		return Result{}, err
	}
	res := Result{KernelVersion: opt.KernelVersion, InitSize: int64(len(opt.Init))}
	root := opt.Root
	modDir := "lib/modules/" + opt.KernelVersion
	realDir, err := fspath.Realpath(root, modDir)
	if err == nil {
		var fi fs.FileInfo
		if fi, err = fs.Stat(root, realDir); err == nil && !fi.IsDir() {
			err = errors.New("not a directory")
		}
	}
	if err != nil {
		return Result{}, fmt.Errorf("%w: /%s: %w", ErrKernelNotFound, modDir, err)
	}
	depData, err := fs.ReadFile(root, realDir+"/modules.dep")
	if err != nil {
		return Result{}, fmt.Errorf("%w: /%s/modules.dep: %w (run depmod in the image)", ErrKernelNotFound, modDir, err)
	}
	graph, err := parseModulesDep(depData, opt.KernelVersion)
	if err != nil {
		return Result{}, fmt.Errorf("%w: /%s/%w", ErrModule, modDir, err)
	}
	builtinData, err := fs.ReadFile(root, realDir+"/modules.builtin")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Result{}, fmt.Errorf("%w: /%s/modules.builtin: %w", ErrModule, modDir, err)
	}
	want := opt.Modules
	if want == nil {
		want = DefaultModules()
	}
	order, builtin, missing := closure(graph, parseBuiltin(builtinData), want)
	res.Builtin, res.Missing = builtin, missing
	requested := map[string]bool{}
	for _, n := range want {
		requested[normName(n)] = true
	}

	members := []member{
		{name: "init", kind: sIFREG, perm: 0o755, data: constData(opt.Init)},
		{name: "dev", kind: sIFDIR, perm: 0o755},
		{name: "dev/console", kind: sIFCHR, perm: 0o600, major: 5, minor: 1},
		{name: "proc", kind: sIFDIR, perm: 0o555},
		{name: "sys", kind: sIFDIR, perm: 0o555},
		{name: "run", kind: sIFDIR, perm: 0o755},
		{name: "newroot", kind: sIFDIR, perm: 0o755},
	}
	mods := make([]Module, len(order))
	var orderTxt strings.Builder
	for i, n := range order {
		e := graph[n]
		mods[i] = Module{Name: n, Path: plainPath(e.path), Source: "/" + modDir + "/" + e.path, Requested: requested[n]}
		orderTxt.WriteString(mods[i].Path + "\n")
		src, idx := realDir+"/"+e.path, i
		members = append(members, member{
			name: modDir + "/" + mods[i].Path, kind: sIFREG, perm: 0o644,
			data: func() ([]byte, error) {
				raw, err := fspath.ReadFile(root, src)
				if err != nil {
					return nil, fmt.Errorf("%w: %s: %w", ErrModule, mods[idx].Source, err)
				}
				ko, err := decompressModule(src, raw)
				if err != nil {
					return nil, fmt.Errorf("%w: %s: %w", ErrModule, mods[idx].Source, err)
				}
				mods[idx].Size = int64(len(ko))
				return ko, nil
			},
		})
	}
	members = append(members,
		member{name: modDir + "/modules.dep", kind: sIFREG, perm: 0o644, data: constData(writeModulesDep(graph, order))},
		member{name: modDir + "/modules.order", kind: sIFREG, perm: 0o644, data: constData([]byte(orderTxt.String()))},
	)
	if builtinData != nil {
		members = append(members, member{name: modDir + "/modules.builtin", kind: sIFREG, perm: 0o644, data: constData(builtinData)})
	}
	members = withParents(members)

	cw := &countWriter{w: w}
	zw, err := gzip.NewWriterLevel(cw, levelOrDefault(opt.Level))
	if err != nil {
		return Result{}, fmt.Errorf("%w: Level: %w", ErrInvalidOptions, err)
	}
	cp := newCPIOWriter(zw)
	for _, m := range members {
		switch m.kind {
		case sIFDIR:
			cp.dir(m.name, m.perm)
		case sIFCHR:
			cp.charDev(m.name, m.perm, m.major, m.minor)
		case sIFREG:
			data, err := m.data()
			if err != nil {
				return Result{}, err
			}
			cp.file(m.name, m.perm, data)
		}
		if cp.err != nil {
			return Result{}, fmt.Errorf("initramfs: write: %w", cp.err)
		}
	}
	if err := cp.close(); err != nil {
		return Result{}, fmt.Errorf("initramfs: write: %w", err)
	}
	if err := zw.Close(); err != nil {
		return Result{}, fmt.Errorf("initramfs: write: %w", err)
	}
	for _, m := range mods {
		res.ModulesSize += m.Size
	}
	res.Modules = mods
	res.Entries = len(members)
	res.ArchiveSize = cp.n
	res.Size = cw.n
	return res, nil
}

func levelOrDefault(l int) int {
	if l == 0 {
		return gzip.DefaultCompression
	}
	return l
}

func constData(b []byte) func() ([]byte, error) { return func() ([]byte, error) { return b, nil } }

// withParents adds every missing parent directory (0755) and sorts members
// by name, which puts each directory before its contents.
func withParents(ms []member) []member {
	have := map[string]bool{}
	for _, m := range ms {
		have[m.name] = true
	}
	for _, m := range ms {
		for d := path.Dir(m.name); d != "." && !have[d]; d = path.Dir(d) {
			have[d] = true
			ms = append(ms, member{name: d, kind: sIFDIR, perm: 0o755})
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
	return ms
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
