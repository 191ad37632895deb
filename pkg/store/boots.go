package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// reportsKept bounds the boot reports kept per host; older ones are dropped.
const reportsKept = 200

// IssueBoot records a new boot attempt of host into img through mac and
// returns its token. Only the token's hash is stored; every earlier attempt of
// the host becomes stale, so its reports are refused.
func (s *Store) IssueBoot(ctx context.Context, host, mac string, img fleet.Image) (string, error) {
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("store: boot token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	err := s.db.Batch(func(tx *bolt.Tx) error {
		var h fleet.Host
		if err := getHost(tx, host, &h); err != nil {
			return err
		}
		boots := tx.Bucket(bBoots)
		id, err := boots.NextSequence()
		if err != nil {
			return err
		}
		a := fleet.BootAttempt{ID: id, Host: host, Image: img.Ref, Digest: img.Rootfs.Digest, MAC: mac, Issued: s.now().UTC()}
		if err := putJSON(boots, []byte(host), a); err != nil {
			return err
		}
		return tx.Bucket(bTokens).Put(sum[:], []byte(host+"\x00"+string(u64(id))))
	})
	if err != nil {
		return "", fmt.Errorf("store: issue boot for host %s: %w", host, err)
	}
	return token, nil
}

// RecordReport stores report r for the boot attempt token names. An unknown
// token wraps fleet.ErrNotFound; a token whose attempt was superseded by a
// newer one, or already ended with booted or failed, wraps fleet.ErrStale.
// A booted report sets the host's BootedImage, BootedDigest and BootedAt.
// The stored report (Host, Image, Attempt and Time filled in) is returned.
func (s *Store) RecordReport(ctx context.Context, token string, r fleet.BootReport) (fleet.BootReport, error) {
	if err := r.Validate(); err != nil {
		return r, err
	}
	sum := sha256.Sum256([]byte(token))
	err := s.db.Batch(func(tx *bolt.Tx) error {
		v := tx.Bucket(bTokens).Get(sum[:])
		if len(v) < 9 {
			return fmt.Errorf("boot token: %w", fleet.ErrNotFound)
		}
		host, id := string(v[:len(v)-9]), binary.BigEndian.Uint64(v[len(v)-8:])
		var a fleet.BootAttempt
		if err := getJSON(tx.Bucket(bBoots), []byte(host), &a); err != nil {
			return fmt.Errorf("boot attempt of host %s: %w", host, err)
		}
		if a.ID != id {
			return fmt.Errorf("boot token of host %s: attempt %d was superseded by attempt %d: %w", host, id, a.ID, fleet.ErrStale)
		}
		if fleet.Terminal(a.Phase) {
			return fmt.Errorf("boot token of host %s: attempt %d already ended (%s): %w", host, id, a.Phase, fleet.ErrStale)
		}
		r.Time, r.Host, r.Attempt, r.Image = s.now().UTC(), host, id, a.Image
		a.Phase = r.Phase
		if err := putJSON(tx.Bucket(bBoots), []byte(host), a); err != nil {
			return err
		}
		if err := appendReport(tx, host, r); err != nil {
			return err
		}
		var h fleet.Host
		if err := getHost(tx, host, &h); err != nil {
			return err
		}
		rc := r
		h.LastReport = &rc
		if r.Phase == fleet.PhaseBooted {
			h.BootedImage, h.BootedAt = a.Image, r.Time
			h.BootedDigest = r.Digest
			if h.BootedDigest == "" {
				h.BootedDigest = a.Digest
			}
		}
		return putJSON(tx.Bucket(bHosts), []byte(host), h)
	})
	if err != nil {
		return r, fmt.Errorf("store: record report: %w", err)
	}
	return r, nil
}

func appendReport(tx *bolt.Tx, host string, r fleet.BootReport) error {
	b, err := tx.Bucket(bReports).CreateBucketIfNotExists([]byte(host))
	if err != nil {
		return err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	if seq > reportsKept {
		if err := b.Delete(u64(seq - reportsKept)); err != nil {
			return err
		}
	}
	return putJSON(b, u64(seq), r)
}

// Reports returns the newest boot reports of host, oldest first, at most
// limit (all kept ones when limit <= 0).
func (s *Store) Reports(ctx context.Context, host string, limit int) ([]fleet.BootReport, error) {
	out := []fleet.BootReport{}
	err := s.db.View(func(tx *bolt.Tx) error {
		var h fleet.Host
		if err := getHost(tx, host, &h); err != nil {
			return err
		}
		b := tx.Bucket(bReports).Bucket([]byte(host))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var r fleet.BootReport
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}
