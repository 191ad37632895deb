package store

import (
	"context"
	"encoding/json"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// AppendEvent adds e to the event log (Seq and, when zero, Time are set).
// Concurrent callers share one transaction.
func (s *Store) AppendEvent(ctx context.Context, e fleet.Event) error {
	return s.AppendEvents(ctx, []fleet.Event{e})
}

// AppendEvents adds es to the event log in one transaction, in order.
func (s *Store) AppendEvents(ctx context.Context, es []fleet.Event) error {
	now := s.now().UTC()
	return s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bEvents)
		for _, e := range es {
			if e.Time.IsZero() {
				e.Time = now
			}
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			e.Seq = seq
			if err := putJSON(b, u64(seq), e); err != nil {
				return err
			}
		}
		return nil
	})
}

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	Host    string
	Rollout string
	// Limit keeps the newest Limit matches (default 100; -1 for all).
	Limit int
}

// Events returns the newest events matching f, oldest first.
func (s *Store) Events(ctx context.Context, f EventFilter) ([]fleet.Event, error) {
	if f.Limit == 0 {
		f.Limit = 100
	}
	out := []fleet.Event{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bEvents).Cursor()
		for k, v := c.Last(); k != nil && (f.Limit < 0 || len(out) < f.Limit); k, v = c.Prev() {
			var e fleet.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if f.Host != "" && e.Host != f.Host || f.Rollout != "" && e.Rollout != f.Rollout {
				continue
			}
			out = append(out, e)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}
