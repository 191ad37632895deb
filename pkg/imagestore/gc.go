package imagestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Remove deletes an image version unless a host uses it: as its desired or
// booted image, or within the retention window of its history (the error
// wraps fleet.ErrInUse and names the hosts). Blobs no other image shares are
// removed; the bytes freed are returned.
func (s *Store) Remove(ctx context.Context, ref string) (int64, error) {
	freed, err := s.man.DeleteImage(ctx, ref, s.cfg.Now().Add(-s.cfg.Retention))
	if err != nil {
		return 0, err
	}
	return s.removeBlobs(freed), nil
}

func (s *Store) removeBlobs(ds []fleet.Digest) int64 {
	var n int64
	for _, d := range ds {
		if fi, err := os.Stat(s.Path(d)); err == nil {
			if err := os.Remove(s.Path(d)); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

// GCResult is what a GC removed (or would remove, in a dry run).
type GCResult struct {
	Images      []string `json:"images"`
	OrphanBlobs []string `json:"orphan_blobs"`
	BytesFreed  int64    `json:"bytes_freed"`
	DryRun      bool     `json:"dry_run"`
	// Kept lists versions beyond keep that hosts still use, with why.
	Kept []string `json:"kept,omitempty"`
}

// GC removes the image versions beyond the newest keep of each name that no
// host uses (see Remove), then every blob file no manifest references. With
// dryRun nothing is removed and the result says what would be.
func (s *Store) GC(ctx context.Context, keep int, dryRun bool) (GCResult, error) {
	if keep < 0 {
		return GCResult{}, fmt.Errorf("%w: keep must be >= 0", fleet.ErrInvalid)
	}
	res := GCResult{DryRun: dryRun, Images: []string{}, OrphanBlobs: []string{}}
	imgs, err := s.man.ListImages(ctx)
	if err != nil {
		return res, err
	}
	byName := map[string][]fleet.Image{}
	for _, im := range imgs {
		byName[im.Name] = append(byName[im.Name], im)
	}
	since := s.cfg.Now().Add(-s.cfg.Retention)
	doomed := map[string]bool{}
	for _, versions := range byName {
		sort.Slice(versions, func(i, j int) bool { return versions[i].Created.After(versions[j].Created) })
		for _, im := range versions[min(keep, len(versions)):] {
			users, err := s.man.ImageUsers(ctx, im.Ref, since)
			if err != nil {
				return res, err
			}
			if len(users) > 0 {
				res.Kept = append(res.Kept, fmt.Sprintf("%s (used by %d hosts)", im.Ref, len(users)))
				continue
			}
			doomed[im.Ref] = true
		}
	}
	if dryRun {
		// What deleting the doomed images would free: their blobs that no
		// surviving image shares.
		live, sizes := map[fleet.Digest]bool{}, map[fleet.Digest]int64{}
		for _, im := range imgs {
			for _, a := range []fleet.Artifact{im.Rootfs, im.Kernel, im.Initrd} {
				if a.IsZero() {
					continue
				}
				if doomed[im.Ref] {
					sizes[a.Digest] = a.Size
				} else {
					live[a.Digest] = true
				}
			}
		}
		for d, n := range sizes {
			if !live[d] {
				res.BytesFreed += n
			}
		}
	}
	for ref := range doomed {
		res.Images = append(res.Images, ref)
		if dryRun {
			continue
		}
		freed, err := s.man.DeleteImage(ctx, ref, since)
		if err != nil {
			return res, err
		}
		res.BytesFreed += s.removeBlobs(freed)
	}
	files, err := filepath.Glob(filepath.Join(s.cfg.blobDir(), "*"))
	if err != nil {
		return res, err
	}
	for _, f := range files {
		d, err := fleet.DigestFromHex(filepath.Base(f))
		if err != nil {
			continue
		}
		ref, err := s.man.BlobReferenced(ctx, d)
		if err != nil {
			return res, err
		}
		if ref {
			continue
		}
		res.OrphanBlobs = append(res.OrphanBlobs, string(d))
		if fi, err := os.Stat(f); err == nil {
			if dryRun || os.Remove(f) == nil {
				res.BytesFreed += fi.Size()
			}
		}
	}
	sort.Strings(res.Images)
	return res, nil
}
