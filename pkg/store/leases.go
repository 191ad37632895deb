package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Leases returns every stored DHCP lease, expired and declined ones included,
// in address order. It is called once when the DHCP server starts.
func (s *Store) Leases(ctx context.Context) ([]fleet.Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: leases: %w", err)
	}
	var out []fleet.Lease
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bLeases).ForEach(func(k, v []byte) error {
			var l fleet.Lease
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("lease %x: %w", k, err)
			}
			out = append(out, l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: leases: %w", err)
	}
	return out, nil
}

// PutLease stores l under its IPv4 address; the lease is durable when
// PutLease returns nil. The store keeps one lease per address and one address
// per MAC: a previous lease of l.MAC at another address is deleted, and a
// previous owner of l.IP loses its MAC index entry. A lease with an empty MAC
// (a declined address) is stored without a MAC index entry. Concurrent
// callers share one transaction and one fsync (bbolt Batch).
func (s *Store) PutLease(ctx context.Context, l fleet.Lease) error {
	if !l.IP.Is4() {
		return fmt.Errorf("store: put lease: %w: ip %s is not IPv4", fleet.ErrInvalid, l.IP)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: put lease %s: %w", l.IP, err)
	}
	data, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("store: put lease %s: %w", l.IP, err)
	}
	key := leaseKey(l.IP)
	err = s.db.Batch(func(tx *bolt.Tx) error {
		leases, macs := tx.Bucket(bLeases), tx.Bucket(bLeaseMAC)
		// The address's previous owner loses its index entry.
		if old := leases.Get(key); old != nil {
			var prev fleet.Lease
			if json.Unmarshal(old, &prev) == nil && prev.MAC != "" && prev.MAC != l.MAC {
				if cur := macs.Get([]byte(prev.MAC)); cur != nil && string(cur) == string(key) {
					if err := macs.Delete([]byte(prev.MAC)); err != nil {
						return err
					}
				}
			}
		}
		if l.MAC != "" {
			// The MAC's previous lease at another address is dropped.
			if cur := macs.Get([]byte(l.MAC)); cur != nil && string(cur) != string(key) {
				if err := leases.Delete(append([]byte(nil), cur...)); err != nil {
					return err
				}
			}
			if err := macs.Put([]byte(l.MAC), key); err != nil {
				return err
			}
		}
		return leases.Put(key, data)
	})
	if err != nil {
		return fmt.Errorf("store: put lease %s: %w", l.IP, err)
	}
	return nil
}

// DeleteLease removes the lease of ip and its MAC index entry. Deleting an
// address without a lease is not an error.
func (s *Store) DeleteLease(ctx context.Context, ip netip.Addr) error {
	if !ip.Is4() {
		return fmt.Errorf("store: delete lease: %w: ip %s is not IPv4", fleet.ErrInvalid, ip)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: delete lease %s: %w", ip, err)
	}
	key := leaseKey(ip)
	err := s.db.Batch(func(tx *bolt.Tx) error {
		leases, macs := tx.Bucket(bLeases), tx.Bucket(bLeaseMAC)
		old := leases.Get(key)
		if old == nil {
			return nil
		}
		var prev fleet.Lease
		if json.Unmarshal(old, &prev) == nil && prev.MAC != "" {
			if cur := macs.Get([]byte(prev.MAC)); cur != nil && string(cur) == string(key) {
				if err := macs.Delete([]byte(prev.MAC)); err != nil {
					return err
				}
			}
		}
		return leases.Delete(key)
	})
	if err != nil {
		return fmt.Errorf("store: delete lease %s: %w", ip, err)
	}
	return nil
}

// LeaseByMAC returns the lease held by mac (normalized), or an error wrapping
// fleet.ErrNotFound.
func (s *Store) LeaseByMAC(ctx context.Context, mac string) (fleet.Lease, error) {
	var l fleet.Lease
	if err := ctx.Err(); err != nil {
		return l, fmt.Errorf("store: lease of %s: %w", mac, err)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		key := tx.Bucket(bLeaseMAC).Get([]byte(mac))
		if key == nil {
			return fleet.ErrNotFound
		}
		return getJSON(tx.Bucket(bLeases), key, &l)
	})
	if err != nil {
		return fleet.Lease{}, fmt.Errorf("store: lease of %s: %w", mac, err)
	}
	return l, nil
}

func leaseKey(ip netip.Addr) []byte {
	a := ip.As4()
	return a[:]
}
