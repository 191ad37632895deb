package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Rollout layout: rollouts/<id> is a bucket holding
//
//	"header" -> the Rollout as JSON, without Hosts
//	"hosts"  -> Rollout.Hosts as a JSON array (written once, at creation)
//	"h"      -> bucket: 8-byte big-endian host index -> RolloutHost as JSON
//
// so a host's progress is one small key: updating it never rewrites the
// header or the other hosts, whatever the rollout's size.
var (
	kRolloutHeader = []byte("header")
	kRolloutHosts  = []byte("hosts")
	bRolloutHosts  = []byte("h")
)

// rolloutID returns r-<unix millis, base36, 9 digits>-<seq, base36, 6 digits>:
// IDs sort by creation time, and by sequence within a millisecond.
func rolloutID(millis int64, seq uint64) string {
	ms := strconv.FormatInt(millis, 36)
	sq := strconv.FormatUint(seq, 36)
	return "r-" + strings.Repeat("0", max(0, 9-len(ms))) + ms + "-" + strings.Repeat("0", max(0, 6-len(sq))) + sq
}

// CreateRollout stores a new rollout and its hosts' progress records in one
// transaction and returns it as stored. An empty r.ID is assigned (sortable
// by creation time); a zero r.Created is set to now. hosts must hold one
// record per r.Hosts entry, hosts[i].Index == i and hosts[i].Host ==
// r.Hosts[i]; fleet.NewRolloutHosts makes them. A duplicate ID wraps
// fleet.ErrExists; inconsistent hosts wrap fleet.ErrInvalid.
func (s *Store) CreateRollout(ctx context.Context, r fleet.Rollout, hosts []fleet.RolloutHost) (fleet.Rollout, error) {
	if len(hosts) != len(r.Hosts) {
		return r, fmt.Errorf("store: create rollout: %w: %d host records for %d hosts", fleet.ErrInvalid, len(hosts), len(r.Hosts))
	}
	for i, h := range hosts {
		if h.Index != i || h.Host != r.Hosts[i] {
			return r, fmt.Errorf("store: create rollout: %w: host record %d is %s (index %d), want %s", fleet.ErrInvalid, i, h.Host, h.Index, r.Hosts[i])
		}
	}
	if !r.State.Valid() {
		return r, fmt.Errorf("store: create rollout: %w: state %q", fleet.ErrInvalid, r.State)
	}
	now := s.now().UTC()
	if r.Created.IsZero() {
		r.Created = now
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bRollouts)
		if r.ID == "" {
			seq, err := root.NextSequence()
			if err != nil {
				return err
			}
			r.ID = rolloutID(now.UnixMilli(), seq)
		}
		if root.Bucket([]byte(r.ID)) != nil {
			return fmt.Errorf("rollout %s: %w", r.ID, fleet.ErrExists)
		}
		b, err := root.CreateBucket([]byte(r.ID))
		if err != nil {
			return err
		}
		if err := putHeader(b, r); err != nil {
			return err
		}
		if err := putJSON(b, kRolloutHosts, r.Hosts); err != nil {
			return err
		}
		hb, err := b.CreateBucket(bRolloutHosts)
		if err != nil {
			return err
		}
		hb.FillPercent = 1 // keys are appended in order
		for _, h := range hosts {
			if err := putJSON(hb, u64(uint64(h.Index)), h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("store: create rollout: %w", err)
	}
	return r, nil
}

func putHeader(b *bolt.Bucket, r fleet.Rollout) error {
	r.Hosts = nil
	return putJSON(b, kRolloutHeader, r)
}

func rolloutBucket(tx *bolt.Tx, id string) (*bolt.Bucket, error) {
	b := tx.Bucket(bRollouts).Bucket([]byte(id))
	if b == nil {
		return nil, fmt.Errorf("rollout %s: %w", id, fleet.ErrNotFound)
	}
	return b, nil
}

// PutRollout replaces the header of an existing rollout (state, counts,
// timestamps...). r.Hosts is ignored: the host list is fixed at creation.
// An unknown ID wraps fleet.ErrNotFound.
func (s *Store) PutRollout(ctx context.Context, r fleet.Rollout) error {
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b, err := rolloutBucket(tx, r.ID)
		if err != nil {
			return err
		}
		return putHeader(b, r)
	})
	if err != nil {
		return fmt.Errorf("store: put rollout: %w", err)
	}
	return nil
}

// Rollout returns the rollout id with its Hosts. An unknown ID wraps
// fleet.ErrNotFound.
func (s *Store) Rollout(ctx context.Context, id string) (fleet.Rollout, error) {
	var r fleet.Rollout
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := rolloutBucket(tx, id)
		if err != nil {
			return err
		}
		if err := getJSON(b, kRolloutHeader, &r); err != nil {
			return fmt.Errorf("rollout %s header: %w", id, err)
		}
		return getJSON(b, kRolloutHosts, &r.Hosts)
	})
	if err != nil {
		return r, fmt.Errorf("store: %w", err)
	}
	return r, nil
}

// Rollouts returns every rollout's header, oldest first. Hosts is left nil
// (a rollout may name 10,000 hosts); Counts tells their number and outcome,
// Rollout(id) returns the list.
func (s *Store) Rollouts(ctx context.Context) ([]fleet.Rollout, error) {
	out := []fleet.Rollout{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bRollouts).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v != nil { // not a nested bucket
				continue
			}
			var r fleet.Rollout
			if err := getJSON(tx.Bucket(bRollouts).Bucket(k), kRolloutHeader, &r); err != nil {
				return fmt.Errorf("rollout %s header: %w", k, err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list rollouts: %w", err)
	}
	return out, nil
}

// RolloutHosts returns the progress of every host of rollout id, in rollout
// order. An unknown ID wraps fleet.ErrNotFound.
func (s *Store) RolloutHosts(ctx context.Context, id string) ([]fleet.RolloutHost, error) {
	var out []fleet.RolloutHost
	err := s.db.View(func(tx *bolt.Tx) error {
		b, err := rolloutBucket(tx, id)
		if err != nil {
			return err
		}
		hb := b.Bucket(bRolloutHosts)
		out = make([]fleet.RolloutHost, 0, hb.Stats().KeyN)
		return hb.ForEach(func(k, v []byte) error {
			var h fleet.RolloutHost
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("rollout %s host %d: %w", id, binary.BigEndian.Uint64(k), err)
			}
			out = append(out, h)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: rollout hosts: %w", err)
	}
	return out, nil
}

// UpdateRolloutHosts stores the given hosts' progress records (matched by
// Index, which must name an existing record of the same host) in one
// transaction; concurrent callers share a commit. When it returns nil the
// records are durable. An unknown rollout or index wraps fleet.ErrNotFound,
// a record whose Host does not match fleet.ErrInvalid.
func (s *Store) UpdateRolloutHosts(ctx context.Context, id string, hosts []fleet.RolloutHost) error {
	if len(hosts) == 0 {
		return nil
	}
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b, err := rolloutBucket(tx, id)
		if err != nil {
			return err
		}
		hb := b.Bucket(bRolloutHosts)
		for _, h := range hosts {
			key := u64(uint64(h.Index))
			old := hb.Get(key)
			if old == nil {
				return fmt.Errorf("rollout %s host index %d: %w", id, h.Index, fleet.ErrNotFound)
			}
			var prev struct {
				Host string `json:"host"`
			}
			if err := json.Unmarshal(old, &prev); err != nil {
				return err
			}
			if prev.Host != h.Host {
				return fmt.Errorf("rollout %s host index %d is %s, not %s: %w", id, h.Index, prev.Host, h.Host, fleet.ErrInvalid)
			}
			if err := putJSON(hb, key, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: update rollout hosts: %w", err)
	}
	return nil
}
