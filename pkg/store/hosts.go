package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	bolt "go.etcd.io/bbolt"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// CreateHost stores a new host. Its name, every MAC and its fixed IP must be
// free: a taken name wraps fleet.ErrExists, a MAC or IP owned by another host
// fleet.ErrConflict.
func (s *Store) CreateHost(ctx context.Context, h fleet.Host) (fleet.Host, error) {
	return s.CreateHostSecret(ctx, h, nil)
}

// CreateHostSecret is CreateHost that also stores the host's sealed secret
// (nil: none) in the same transaction: both are stored or neither is. The
// store never interprets a secret.
func (s *Store) CreateHostSecret(ctx context.Context, h fleet.Host, sealed []byte) (fleet.Host, error) {
	if err := h.Validate(); err != nil {
		return fleet.Host{}, err
	}
	now := s.now().UTC()
	h.Created, h.Updated = now, now
	err := s.db.Update(func(tx *bolt.Tx) error {
		hosts := tx.Bucket(bHosts)
		if hosts.Get([]byte(h.Name)) != nil {
			return fmt.Errorf("host %s: %w", h.Name, fleet.ErrExists)
		}
		if err := reindexMACs(tx, h.Name, nil, h.MACs); err != nil {
			return err
		}
		if err := reindexIP(tx, h.Name, netip.Prefix{}, h.IP); err != nil {
			return err
		}
		if sealed != nil {
			if err := tx.Bucket(bSecrets).Put([]byte(h.Name), sealed); err != nil {
				return err
			}
		}
		return putJSON(hosts, []byte(h.Name), h)
	})
	if err != nil {
		return fleet.Host{}, fmt.Errorf("store: create host: %w", err)
	}
	return h, nil
}

// GetHost returns the named host or an error wrapping fleet.ErrNotFound.
func (s *Store) GetHost(ctx context.Context, name string) (fleet.Host, error) {
	var h fleet.Host
	err := s.db.View(func(tx *bolt.Tx) error { return getHost(tx, name, &h) })
	return h, err
}

func getHost(tx *bolt.Tx, name string, h *fleet.Host) error {
	if err := getJSON(tx.Bucket(bHosts), []byte(name), h); err != nil {
		return fmt.Errorf("host %s: %w", name, err)
	}
	return nil
}

// HostByMAC returns the host owning mac (normalized, lowercase colon
// separated) or an error wrapping fleet.ErrNotFound.
func (s *Store) HostByMAC(ctx context.Context, mac string) (fleet.Host, error) {
	var h fleet.Host
	err := s.db.View(func(tx *bolt.Tx) error {
		name := tx.Bucket(bMACs).Get([]byte(mac))
		if name == nil {
			return fmt.Errorf("mac %s: %w", mac, fleet.ErrNotFound)
		}
		return getHost(tx, string(name), &h)
	})
	return h, err
}

// HostByIP returns the host whose fixed address is ip, or an error wrapping
// fleet.ErrNotFound when no host has it.
func (s *Store) HostByIP(ctx context.Context, ip netip.Addr) (fleet.Host, error) {
	var h fleet.Host
	err := s.db.View(func(tx *bolt.Tx) error {
		name := tx.Bucket(bIPs).Get(ipKey(ip))
		if name == nil {
			return fmt.Errorf("ip %s: %w", ip, fleet.ErrNotFound)
		}
		return getHost(tx, string(name), &h)
	})
	return h, err
}

// ListHosts returns the hosts the selector matches, ordered by name. An empty
// selector matches all.
func (s *Store) ListHosts(ctx context.Context, sel fleet.Selector) ([]fleet.Host, error) {
	var out []fleet.Host
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bHosts).ForEach(func(k, v []byte) error {
			var h fleet.Host
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("host %s: %w", k, err)
			}
			if sel.Matches(h.Labels) {
				out = append(out, h)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list hosts: %w", err)
	}
	return out, nil
}

// UpdateHost applies fn to the named host in one transaction and stores the
// result. fn must not change the name; MAC and IP changes are re-indexed (a
// MAC or IP owned by another host wraps fleet.ErrConflict). An error from fn
// aborts the update and is returned as is.
func (s *Store) UpdateHost(ctx context.Context, name string, fn func(*fleet.Host) error) (fleet.Host, error) {
	var h fleet.Host
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		h, err = s.updateHost(tx, name, fn)
		return err
	})
	return h, err
}

// UpdateHostSecret is UpdateHost that also replaces the host's sealed secret
// (nil deletes it) in the same transaction: both change or neither does.
func (s *Store) UpdateHostSecret(ctx context.Context, name string, fn func(*fleet.Host) error, sealed []byte) (fleet.Host, error) {
	var h fleet.Host
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if h, err = s.updateHost(tx, name, fn); err != nil {
			return err
		}
		if sealed == nil {
			return tx.Bucket(bSecrets).Delete([]byte(name))
		}
		return tx.Bucket(bSecrets).Put([]byte(name), sealed)
	})
	return h, err
}

func (s *Store) updateHost(tx *bolt.Tx, name string, fn func(*fleet.Host) error) (fleet.Host, error) {
	var h fleet.Host
	if err := getHost(tx, name, &h); err != nil {
		return h, err
	}
	old, oldIP := append([]string(nil), h.MACs...), h.IP
	if err := fn(&h); err != nil {
		return h, err
	}
	if h.Name != name {
		return h, fmt.Errorf("%w: host %s cannot be renamed", fleet.ErrInvalid, name)
	}
	if err := h.Validate(); err != nil {
		return h, err
	}
	if err := reindexMACs(tx, name, old, h.MACs); err != nil {
		return h, err
	}
	if err := reindexIP(tx, name, oldIP, h.IP); err != nil {
		return h, err
	}
	h.Updated = s.now().UTC()
	return h, putJSON(tx.Bucket(bHosts), []byte(name), h)
}

func reindexMACs(tx *bolt.Tx, host string, old, cur []string) error {
	macs := tx.Bucket(bMACs)
	for _, m := range old {
		if err := macs.Delete([]byte(m)); err != nil {
			return err
		}
	}
	for _, m := range cur {
		if owner := macs.Get([]byte(m)); owner != nil && string(owner) != host {
			return fmt.Errorf("mac %s belongs to host %s: %w", m, owner, fleet.ErrConflict)
		}
		if err := macs.Put([]byte(m), []byte(host)); err != nil {
			return err
		}
	}
	return nil
}

// reindexIP moves host's entry in the fixed-IP index from old to cur (either
// may be the zero Prefix: no fixed IP). An unchanged address is left alone,
// and only an entry of host's own is removed: hosts that shared an address
// before schema 2 keep the index as the upgrade left it.
func reindexIP(tx *bolt.Tx, host string, old, cur netip.Prefix) error {
	if old.Addr() == cur.Addr() {
		return nil
	}
	ips := tx.Bucket(bIPs)
	if old.IsValid() && string(ips.Get(ipKey(old.Addr()))) == host {
		if err := ips.Delete(ipKey(old.Addr())); err != nil {
			return err
		}
	}
	if !cur.IsValid() {
		return nil
	}
	if owner := ips.Get(ipKey(cur.Addr())); owner != nil && string(owner) != host {
		return fmt.Errorf("ip %s belongs to host %s: %w", cur.Addr(), owner, fleet.ErrConflict)
	}
	return ips.Put(ipKey(cur.Addr()), []byte(host))
}

func ipKey(ip netip.Addr) []byte { return []byte(ip.String()) }

// DeleteHost removes a host with its MAC and IP index entries, history, reports and
// stored BMC secret.
func (s *Store) DeleteHost(ctx context.Context, name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		var h fleet.Host
		if err := getHost(tx, name, &h); err != nil {
			return err
		}
		if err := reindexMACs(tx, name, h.MACs, nil); err != nil {
			return err
		}
		if err := reindexIP(tx, name, h.IP, netip.Prefix{}); err != nil {
			return err
		}
		for _, b := range [][]byte{bHistory, bReports} {
			if tx.Bucket(b).Bucket([]byte(name)) != nil {
				if err := tx.Bucket(b).DeleteBucket([]byte(name)); err != nil {
					return err
				}
			}
		}
		if err := tx.Bucket(bSecrets).Delete([]byte(name)); err != nil {
			return err
		}
		return tx.Bucket(bHosts).Delete([]byte(name))
	})
}

// RecordBootMode remembers the firmware mode ("bios" or "uefi") a host last
// netbooted with. It is batched with other bursty writes.
func (s *Store) RecordBootMode(ctx context.Context, host, mode string) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		var h fleet.Host
		if err := getHost(tx, host, &h); err != nil {
			return err
		}
		if h.BootMode == mode {
			return nil
		}
		h.BootMode = mode
		return putJSON(tx.Bucket(bHosts), []byte(host), h)
	})
}

// Secret returns host's sealed secret, or an error wrapping fleet.ErrNotFound.
func (s *Store) Secret(ctx context.Context, host string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bSecrets).Get([]byte(host))
		if v == nil {
			return fmt.Errorf("secret of host %s: %w", host, fleet.ErrNotFound)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}
