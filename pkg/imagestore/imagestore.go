// Package imagestore keeps image blobs content-addressed on disk and imports
// image versions: it streams the files, hashes them, checks that the rootfs is
// a squashfs, finds the kernel inside it when none is given, builds the
// netboot initramfs (kiln-init plus the image's own kernel modules) and
// records the manifest. It also removes images and collects garbage.
//
// Blobs live at DIR/sha256/<hex>. They are written to DIR/tmp, hashed while
// streaming, fsynced and renamed into place, so a blob under its digest name
// is always complete and verified; a failed or interrupted import leaves no
// partial blob and no manifest.
package imagestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/initramfs"
	"github.com/immutableinfra/kiln/pkg/squashfs"
)

var (
	// ErrNotSquashfs: the rootfs is not a squashfs image.
	ErrNotSquashfs = errors.New("rootfs is not a squashfs image")
	// ErrNoKernel: no kernel was given and the rootfs has none.
	ErrNoKernel = errors.New("no kernel")
	// ErrNoInit: an initramfs must be built but no kiln-init binary is available.
	ErrNoInit = errors.New("no kiln-init binary to build the initramfs")
	// ErrDiskFull: the disk filled up during an import.
	ErrDiskFull = errors.New("disk full")
	// ErrCorruptBlob: a blob on disk no longer matches its digest.
	ErrCorruptBlob = errors.New("blob does not match its digest")
)

// Manifests is where image manifests and blob references are kept
// (implemented by *store.Store).
type Manifests interface {
	PutImage(ctx context.Context, img fleet.Image) (fleet.Image, bool, error)
	Image(ctx context.Context, ref string) (fleet.Image, error)
	ListImages(ctx context.Context) ([]fleet.Image, error)
	DeleteImage(ctx context.Context, ref string, since time.Time) ([]fleet.Digest, error)
	BlobReferenced(ctx context.Context, d fleet.Digest) (bool, error)
	ImageUsers(ctx context.Context, ref string, since time.Time) ([]string, error)
}

// Config configures the image store. Zero values mean the documented defaults.
type Config struct {
	// Dir holds the blobs (Dir/sha256) and import temp files (Dir/tmp). Required.
	Dir string
	// KilnInit returns the kiln-init binary packed as /init into the
	// initramfs kilnd builds. nil: images must be imported with an initrd.
	KilnInit func() ([]byte, error)
	// Modules are the kernel module names packed into built initramfs;
	// nil means initramfs.DefaultModules().
	Modules []string
	// Retention is how long an image stays protected after a host's history
	// last named it (so it can be reverted to). Default 30 days.
	Retention time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Store is the blob store and importer.
type Store struct {
	cfg  Config
	man  Manifests
	log  *slog.Logger
	size prometheus.Gauge
	imps *prometheus.CounterVec
}

// New prepares cfg.Dir and removes temp files an interrupted import left.
func New(cfg Config, man Manifests, log *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("imagestore: %w: Dir is empty", fleet.ErrInvalid)
	}
	if cfg.Retention == 0 {
		cfg.Retention = 30 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{cfg.blobDir(), cfg.tmpDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("imagestore: %w", err)
		}
	}
	stale, _ := filepath.Glob(filepath.Join(cfg.tmpDir(), "*"))
	for _, f := range stale {
		log.Info("removing temp file of an interrupted import", "file", f)
		os.RemoveAll(f)
	}
	s := &Store{cfg: cfg, man: man, log: log,
		imps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_image_imports_total", Help: "Image imports by outcome (created, unchanged, error)."}, []string{"outcome"}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_image_blob_bytes_written_total", Help: "Bytes of new blobs written by imports."}),
	}
	if reg != nil {
		if err := reg.Register(s.imps); err != nil {
			return nil, err
		}
		if err := reg.Register(s.size); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (c Config) blobDir() string { return filepath.Join(c.Dir, "sha256") }
func (c Config) tmpDir() string  { return filepath.Join(c.Dir, "tmp") }

// Path returns where the blob with digest d is (or would be) stored.
func (s *Store) Path(d fleet.Digest) string { return filepath.Join(s.cfg.blobDir(), d.Hex()) }

// Open returns the blob's file for reading, or an error wrapping
// fleet.ErrNotFound. Only verified blobs ever exist under their digest.
func (s *Store) Open(d fleet.Digest) (*os.File, error) {
	if _, err := fleet.ParseDigest(string(d)); err != nil {
		return nil, err
	}
	f, err := os.Open(s.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, fleet.ErrNotFound)
	}
	return f, err
}

// Verify re-hashes the stored blob d; a mismatch wraps ErrCorruptBlob.
func (s *Store) Verify(d fleet.Digest) error {
	f, err := s.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != string(d) {
		return fmt.Errorf("blob %s: %w (it hashes to %s)", d, ErrCorruptBlob, got)
	}
	return nil
}

// tempBlob is a blob being written: hashed as it streams.
type tempBlob struct {
	f    *os.File
	h    hash.Hash
	size int64
	what string
}

func (s *Store) newTemp(what string) (*tempBlob, error) {
	f, err := os.CreateTemp(s.cfg.tmpDir(), what+"-*")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &tempBlob{f: f, h: sha256.New(), what: what}, nil
}

func (t *tempBlob) Write(p []byte) (int, error) {
	n, err := t.f.Write(p)
	t.h.Write(p[:n])
	t.size += int64(n)
	return n, err
}

func (t *tempBlob) digest() fleet.Digest {
	return fleet.Digest("sha256:" + hex.EncodeToString(t.h.Sum(nil)))
}

func (t *tempBlob) artifact() fleet.Artifact { return fleet.Artifact{Digest: t.digest(), Size: t.size} }

// discard removes the temp file; safe to call twice.
func (t *tempBlob) discard() {
	if t == nil || t.f == nil {
		return
	}
	t.f.Close()
	os.Remove(t.f.Name())
	t.f = nil
}

// fill copies r into the temp blob and fsyncs it.
func (t *tempBlob) fill(r io.Reader) error {
	if _, err := io.Copy(t, r); err != nil {
		return ioError(t.what, err)
	}
	if err := t.f.Sync(); err != nil {
		return ioError(t.what, err)
	}
	return nil
}

func ioError(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%s: %w while writing it (%v); nothing was stored", what, ErrDiskFull, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// commit moves the temp blob under its digest name (or drops it when that
// blob exists already) and fsyncs the directory. It returns the bytes newly
// stored.
func (s *Store) commit(t *tempBlob) (int64, error) {
	dst := s.Path(t.digest())
	if _, err := os.Stat(dst); err == nil {
		t.discard()
		return 0, nil
	}
	if err := t.f.Close(); err != nil {
		return 0, ioError(t.what, err)
	}
	if err := os.Chmod(t.f.Name(), 0o444); err != nil {
		return 0, err
	}
	if err := os.Rename(t.f.Name(), dst); err != nil {
		return 0, fmt.Errorf("%s: %w", t.what, err)
	}
	t.f = nil
	return t.size, syncDir(s.cfg.blobDir())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ImportRequest is one image version to import. Rootfs is required; Kernel
// and Initrd are optional (found in the rootfs / built by kilnd when nil).
type ImportRequest struct {
	Ref     string
	Arch    string
	Cmdline string
	Rootfs  io.Reader
	Kernel  io.Reader
	Initrd  io.Reader
}

// Import streams the request's files into the store and records the
// manifest. Re-importing NAME@VERSION with identical content returns the
// stored manifest with created=false; other content wraps fleet.ErrConflict.
// On any error nothing is recorded and no partial blob remains.
func (s *Store) Import(ctx context.Context, req ImportRequest) (img fleet.Image, created bool, err error) {
	defer func() {
		switch {
		case err != nil:
			s.imps.WithLabelValues("error").Inc()
		case created:
			s.imps.WithLabelValues("created").Inc()
		default:
			s.imps.WithLabelValues("unchanged").Inc()
		}
	}()
	im := imp{s: s, ctx: ctx}
	defer im.discardAll()
	img, err = im.run(req)
	if err != nil {
		return fleet.Image{}, false, fmt.Errorf("import %s: %w", req.Ref, err)
	}
	return im.finish(img)
}

// imp is one import in progress.
type imp struct {
	s     *Store
	ctx   context.Context
	temps []*tempBlob
}

func (im *imp) discardAll() {
	for _, t := range im.temps {
		t.discard()
	}
}

func (im *imp) stream(what string, r io.Reader) (*tempBlob, error) {
	t, err := im.s.newTemp(what)
	if err != nil {
		return nil, err
	}
	im.temps = append(im.temps, t)
	return t, t.fill(ctxReader{im.ctx, r})
}

func (im *imp) run(req ImportRequest) (fleet.Image, error) {
	ref, err := fleet.ParseRef(req.Ref)
	if err != nil {
		return fleet.Image{}, err
	}
	if ref.IsLatest() {
		return fleet.Image{}, fmt.Errorf("%w: an import needs an explicit version (NAME@VERSION)", fleet.ErrInvalid)
	}
	if req.Arch == "" {
		req.Arch = fleet.ArchX86_64
	}
	if err := fleet.ValidateArch(req.Arch); err != nil {
		return fleet.Image{}, err
	}
	if strings.ContainsAny(req.Cmdline, "\r\n") {
		return fleet.Image{}, fmt.Errorf("%w: cmdline contains a line break", fleet.ErrInvalid)
	}
	if req.Rootfs == nil {
		return fleet.Image{}, fmt.Errorf("%w: rootfs is required", fleet.ErrInvalid)
	}
	img := fleet.Image{Ref: ref.String(), Name: ref.Name, Version: ref.Version, Arch: req.Arch,
		Cmdline: strings.TrimSpace(req.Cmdline), Created: im.s.cfg.Now().UTC()}

	rootfs, err := im.stream("rootfs", req.Rootfs)
	if err != nil {
		return img, err
	}
	img.Rootfs = rootfs.artifact()
	sq, err := squashfs.Open(rootfs.f, rootfs.size)
	if err != nil {
		if errors.Is(err, squashfs.ErrNotSquashfs) {
			return img, fmt.Errorf("rootfs: %w (%v)", ErrNotSquashfs, err)
		}
		return img, fmt.Errorf("rootfs: %w", err)
	}

	kpath, kver, kerr := squashfs.FindKernel(sq)
	if req.Kernel != nil {
		k, err := im.stream("kernel", req.Kernel)
		if err != nil {
			return img, err
		}
		img.Kernel = k.artifact()
	} else {
		if kerr != nil {
			return img, fmt.Errorf("%w: no --kernel was given and the rootfs has none (%v)", ErrNoKernel, kerr)
		}
		f, err := sq.Open(kpath)
		if err != nil {
			return img, fmt.Errorf("kernel %s in rootfs: %w", kpath, err)
		}
		k, err := im.stream("kernel", f)
		f.Close()
		if err != nil {
			return img, err
		}
		img.Kernel, img.KernelPath = k.artifact(), kpath
	}
	if kerr == nil {
		img.KernelVersion = kver
	}

	if req.Initrd != nil {
		t, err := im.stream("initrd", req.Initrd)
		if err != nil {
			return img, err
		}
		img.Initrd = t.artifact()
		return img, nil
	}
	if err := im.buildInitrd(&img, sq); err != nil {
		return img, err
	}
	return img, nil
}

func (im *imp) buildInitrd(img *fleet.Image, root fs.FS) error {
	if im.s.cfg.KilnInit == nil {
		return fmt.Errorf("%w: pass --initrd, or give kilnd a kiln-init binary", ErrNoInit)
	}
	init, err := im.s.cfg.KilnInit()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoInit, err)
	}
	if img.KernelVersion == "" {
		return fmt.Errorf("initrd: the kernel version of %s is unknown (no lib/modules/<version> in the rootfs); pass --initrd", img.Ref)
	}
	t, err := im.s.newTemp("initrd")
	if err != nil {
		return err
	}
	im.temps = append(im.temps, t)
	res, err := initramfs.Build(t, initramfs.Options{Init: init, Root: root, KernelVersion: img.KernelVersion, Modules: im.s.cfg.Modules})
	if err != nil {
		return ioError("initrd", err)
	}
	if err := t.f.Sync(); err != nil {
		return ioError("initrd", err)
	}
	im.s.log.Info("built initramfs", "image", img.Ref, "kernel", img.KernelVersion,
		"modules", len(res.Modules), "missing", len(res.Missing), "bytes", t.size)
	img.Initrd, img.InitrdBuilt = t.artifact(), true
	return nil
}

// finish commits the blobs, then the manifest: a crash in between leaves only
// unreferenced blobs (collected by GC), never a manifest without its blobs.
func (im *imp) finish(img fleet.Image) (fleet.Image, bool, error) {
	if old, err := im.s.man.Image(im.ctx, img.Ref); err == nil {
		if !old.SameContent(img) {
			return fleet.Image{}, false, fmt.Errorf("import %s: image exists with other content (rootfs %s, not %s): %w; import it as a new version",
				img.Ref, old.Rootfs.Digest, img.Rootfs.Digest, fleet.ErrConflict)
		}
		return old, false, nil
	}
	for _, t := range im.temps {
		n, err := im.s.commit(t)
		if err != nil {
			return fleet.Image{}, false, fmt.Errorf("import %s: %w", img.Ref, err)
		}
		im.s.size.Add(float64(n))
	}
	stored, created, err := im.s.man.PutImage(im.ctx, img)
	if err != nil {
		return fleet.Image{}, false, fmt.Errorf("import %s: %w", img.Ref, err)
	}
	im.s.log.Info("imported image", "image", img.Ref, "rootfs", img.Rootfs.Digest, "created", created)
	return stored, created, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
