package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// PutImage stores an image manifest and takes a reference on each of its
// blobs, in one transaction. Image versions are immutable: when NAME@VERSION
// exists with the same content the stored manifest is returned with
// created=false; with other content the error wraps fleet.ErrConflict.
func (s *Store) PutImage(ctx context.Context, img fleet.Image) (stored fleet.Image, created bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bImages)
		var old fleet.Image
		if err := getJSON(b, []byte(img.Ref), &old); err == nil {
			if !old.SameContent(img) {
				return fmt.Errorf("image %s exists with other content (rootfs %s, not %s): %w; import it as a new version",
					img.Ref, old.Rootfs.Digest, img.Rootfs.Digest, fleet.ErrConflict)
			}
			stored = old
			return nil
		}
		for _, d := range img.Digests() {
			if err := addBlobRef(tx, d, 1); err != nil {
				return err
			}
		}
		stored, created = img, true
		return putJSON(b, []byte(img.Ref), img)
	})
	if err != nil {
		return fleet.Image{}, false, fmt.Errorf("store: put image: %w", err)
	}
	return stored, created, nil
}

func addBlobRef(tx *bolt.Tx, d fleet.Digest, delta int64) error {
	b := tx.Bucket(bBlobs)
	var n int64
	if v := b.Get([]byte(d)); v != nil {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n += delta
	if n <= 0 {
		return b.Delete([]byte(d))
	}
	return b.Put([]byte(d), u64(uint64(n)))
}

// Image returns the manifest ref names. NAME@latest (or a bare NAME) resolves
// to the newest import of NAME. Unknown refs wrap fleet.ErrNotFound.
func (s *Store) Image(ctx context.Context, ref string) (fleet.Image, error) {
	var img fleet.Image
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		img, err = resolveImage(tx, ref)
		return err
	})
	return img, err
}

func resolveImage(tx *bolt.Tx, ref string) (fleet.Image, error) {
	r, err := fleet.ParseRef(ref)
	if err != nil {
		return fleet.Image{}, err
	}
	var img fleet.Image
	b := tx.Bucket(bImages)
	if !r.IsLatest() {
		if err := getJSON(b, []byte(r.String()), &img); err != nil {
			return img, fmt.Errorf("image %s: %w", r, err)
		}
		return img, nil
	}
	found := false
	prefix := []byte(r.Name + "@")
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var cand fleet.Image
		if err := json.Unmarshal(v, &cand); err != nil {
			return img, err
		}
		if !found || cand.Created.After(img.Created) || cand.Created.Equal(img.Created) && cand.Version > img.Version {
			img, found = cand, true
		}
	}
	if !found {
		return img, fmt.Errorf("image %s: no version of %s imported: %w", r, r.Name, fleet.ErrNotFound)
	}
	return img, nil
}

// ListImages returns every image manifest ordered by name, then by creation
// time (oldest first).
func (s *Store) ListImages(ctx context.Context) ([]fleet.Image, error) {
	out := []fleet.Image{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bImages).ForEach(func(k, v []byte) error {
			var img fleet.Image
			if err := json.Unmarshal(v, &img); err != nil {
				return err
			}
			out = append(out, img)
			return nil
		})
	})
	sortImages(out)
	return out, err
}

// ImageUsers returns, for ref, the hosts that keep it in use: hosts whose
// desired or booted image it is, or whose history names it at or after
// since (they could be reverted to it).
func (s *Store) ImageUsers(ctx context.Context, ref string, since time.Time) ([]string, error) {
	var users []string
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		users, err = imageUsers(tx, ref, since)
		return err
	})
	return users, err
}

func imageUsers(tx *bolt.Tx, ref string, since time.Time) ([]string, error) {
	var users []string
	err := tx.Bucket(bHosts).ForEach(func(k, v []byte) error {
		var h fleet.Host
		if err := json.Unmarshal(v, &h); err != nil {
			return err
		}
		if h.DesiredImage == ref || h.BootedImage == ref {
			users = append(users, h.Name)
			return nil
		}
		hb := tx.Bucket(bHistory).Bucket(k)
		if hb == nil {
			return nil
		}
		c := hb.Cursor()
		for hk, hv := c.Last(); hk != nil; hk, hv = c.Prev() {
			var e fleet.HistoryEntry
			if err := json.Unmarshal(hv, &e); err != nil {
				return err
			}
			if e.Time.Before(since) {
				break
			}
			if e.From == ref || e.To == ref {
				users = append(users, h.Name)
				break
			}
		}
		return nil
	})
	return users, err
}

// DeleteImage removes a manifest unless a host uses it (see ImageUsers; the
// error wraps fleet.ErrInUse and names the hosts). It returns the digests of
// blobs no manifest references any more: the caller removes those files.
func (s *Store) DeleteImage(ctx context.Context, ref string, since time.Time) (freed []fleet.Digest, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		var img fleet.Image
		if err := getJSON(tx.Bucket(bImages), []byte(ref), &img); err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		users, err := imageUsers(tx, ref, since)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fmt.Errorf("image %s is used by %d host(s) (%s): %w", ref, len(users), preview(users, 5), fleet.ErrInUse)
		}
		for _, d := range img.Digests() {
			if err := addBlobRef(tx, d, -1); err != nil {
				return err
			}
			if tx.Bucket(bBlobs).Get([]byte(d)) == nil {
				freed = append(freed, d)
			}
		}
		return tx.Bucket(bImages).Delete([]byte(ref))
	})
	if err != nil {
		return nil, fmt.Errorf("store: delete image: %w", err)
	}
	return freed, nil
}

// BlobReferenced reports whether any manifest references digest d.
func (s *Store) BlobReferenced(ctx context.Context, d fleet.Digest) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bBlobs).Get([]byte(d)) != nil
		return nil
	})
	return ok, err
}

func preview(names []string, n int) string {
	if len(names) <= n {
		return joinComma(names)
	}
	return fmt.Sprintf("%s and %d more", joinComma(names[:n]), len(names)-n)
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x)
	}
	return b.String()
}
