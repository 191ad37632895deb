package store

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Assign sets the desired image of every named host to ref and appends one
// history entry per host whose desired image changes, all in one transaction:
// after a crash either every host has its new image and its entry, or none
// has. ref may be NAME@latest; it is resolved and must name an existing image.
// Hosts already on ref are left as they are (no entry).
func (s *Store) Assign(ctx context.Context, hosts []string, ref, actor, reason string) error {
	_, _, err := s.AssignHosts(ctx, hosts, ref, actor, reason)
	return err
}

// AssignHosts is Assign returning the hosts as stored after the change and
// the names of those whose desired image changed.
func (s *Store) AssignHosts(ctx context.Context, hosts []string, ref, actor, reason string) ([]fleet.Host, []string, error) {
	now := s.now().UTC()
	out := make([]fleet.Host, 0, len(hosts))
	var changed []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		img, err := resolveImage(tx, ref)
		if err != nil {
			return err
		}
		hb := tx.Bucket(bHosts)
		for _, name := range hosts {
			var h fleet.Host
			if err := getHost(tx, name, &h); err != nil {
				return err
			}
			if h.DesiredImage != img.Ref {
				e := fleet.HistoryEntry{Time: now, From: h.DesiredImage, To: img.Ref, Actor: actor, Reason: reason}
				if err := appendHistory(tx, name, e); err != nil {
					return err
				}
				h.DesiredImage = img.Ref
				h.Updated = now
				changed = append(changed, name)
				if err := putJSON(hb, []byte(name), h); err != nil {
					return err
				}
			}
			out = append(out, h)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: assign %s: %w", ref, err)
	}
	return out, changed, nil
}

// Unassign clears the desired image of a host (it then boots its next boot
// device), with a history entry.
func (s *Store) Unassign(ctx context.Context, host, actor, reason string) error {
	now := s.now().UTC()
	return s.db.Update(func(tx *bolt.Tx) error {
		var h fleet.Host
		if err := getHost(tx, host, &h); err != nil {
			return err
		}
		if h.DesiredImage == "" {
			return nil
		}
		if err := appendHistory(tx, host, fleet.HistoryEntry{Time: now, From: h.DesiredImage, Actor: actor, Reason: reason}); err != nil {
			return err
		}
		h.DesiredImage, h.Updated = "", now
		return putJSON(tx.Bucket(bHosts), []byte(host), h)
	})
}

func appendHistory(tx *bolt.Tx, host string, e fleet.HistoryEntry) error {
	b, err := tx.Bucket(bHistory).CreateBucketIfNotExists([]byte(host))
	if err != nil {
		return err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return putJSON(b, u64(seq), e)
}

// History returns every assignment change of host, oldest first. A host with
// no history returns an empty slice; an unknown host fleet.ErrNotFound.
func (s *Store) History(ctx context.Context, host string) ([]fleet.HistoryEntry, error) {
	out := []fleet.HistoryEntry{}
	err := s.db.View(func(tx *bolt.Tx) error {
		var h fleet.Host
		if err := getHost(tx, host, &h); err != nil {
			return err
		}
		b := tx.Bucket(bHistory).Bucket([]byte(host))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var e fleet.HistoryEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}
