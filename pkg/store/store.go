// Package store persists kiln's fleet state in one bbolt file: hosts (with a
// MAC index), images, blob reference counts, per-host append-only assignment
// history, leases, boot attempts and reports, rollouts and the event log.
//
// Every method is safe for concurrent use. Writes that belong together (an
// assignment and its history entry) are one transaction: after a crash either
// both are there or neither is. Writes that come in bursts (leases, reports)
// go through bbolt's Batch, which groups concurrent callers into one fsync.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// SchemaVersion is the layout this code reads and writes. Open refuses a file
// written by a newer kiln and upgrades an older one.
//
// History: 1 the first layout; 2 adds the fixed-IP index (bucket "ips").
const SchemaVersion = 2

var (
	// ErrLocked means another process (a second kilnd) holds the database.
	ErrLocked = errors.New("database is locked by another process")
	// ErrSchema means the file was written by a newer kiln.
	ErrSchema = errors.New("unsupported schema version")
)

// Bucket names. Nested buckets: history/<host>, reports/<host>.
var (
	bMeta     = []byte("meta")
	bHosts    = []byte("hosts")
	bMACs     = []byte("macs")
	bIPs      = []byte("ips")
	bImages   = []byte("images")
	bBlobs    = []byte("blobs")
	bHistory  = []byte("history")
	bLeases   = []byte("leases")
	bLeaseMAC = []byte("lease_macs")
	bBoots    = []byte("boots")
	bTokens   = []byte("boot_tokens")
	bReports  = []byte("reports")
	bEvents   = []byte("events")
	bRollouts = []byte("rollouts")
	bSecrets  = []byte("secrets")

	allBuckets = [][]byte{bMeta, bHosts, bMACs, bIPs, bImages, bBlobs, bHistory, bLeases, bLeaseMAC,
		bBoots, bTokens, bReports, bEvents, bRollouts, bSecrets}

	kSchema = []byte("schema")
)

// Options configures Open. The zero value is usable.
type Options struct {
	// LockTimeout is how long Open waits for another process's lock before it
	// fails with ErrLocked. Default 1s.
	LockTimeout time.Duration
	// NoSync skips fsync (tests and benchmarks only: a crash can lose data).
	NoSync bool
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives store events; nil discards.
	Logger *slog.Logger
}

// Store is kiln's state in one bbolt file.
type Store struct {
	db  *bolt.DB
	now func() time.Time
	log *slog.Logger
}

// Open opens (creating if needed) the bbolt file at path. A second Open of the
// same file from another process fails within LockTimeout with ErrLocked.
func Open(path string, opt Options) (*Store, error) {
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opt.LockTimeout, NoSync: opt.NoSync, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: %w (is another kilnd running on this data dir?)", path, ErrLocked)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.MaxBatchDelay = 2 * time.Millisecond
	s := &Store{db: db, now: opt.Now, log: opt.Logger}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		if v := meta.Get(kSchema); v != nil {
			got := binary.BigEndian.Uint64(v)
			if got > SchemaVersion {
				return fmt.Errorf("%w: the file has schema %d, this kilnd knows up to %d (upgrade kilnd)", ErrSchema, got, SchemaVersion)
			}
			// Older layouts are upgraded one step at a time, in this
			// transaction: a failed step leaves the file as it was.
			if got < 2 {
				if err := s.indexIPs(tx); err != nil {
					return fmt.Errorf("upgrading schema 1 to 2: %w", err)
				}
			}
		}
		return meta.Put(kSchema, u64(SchemaVersion))
	})
}

// indexIPs builds the fixed-IP index from the hosts (schema 1 to 2). Schema
// 1 did not keep fixed IPs unique: of several hosts with one IP the first by
// name keeps it in the index, and the others are logged.
func (s *Store) indexIPs(tx *bolt.Tx) error {
	ips := tx.Bucket(bIPs)
	return tx.Bucket(bHosts).ForEach(func(k, v []byte) error {
		var h fleet.Host
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("host %s: %w", k, err)
		}
		if !h.IP.IsValid() {
			return nil
		}
		key := ipKey(h.IP.Addr())
		if owner := ips.Get(key); owner != nil {
			s.log.Warn("store: two hosts share a fixed IP; change one of them", "ip", h.IP.Addr().String(), "host", h.Name, "indexed_for", string(owner))
			return nil
		}
		return ips.Put(key, k)
	})
}

// Close closes the database. In-flight transactions finish first.
func (s *Store) Close() error { return s.db.Close() }

// Backup writes a consistent copy of the database to w while the store stays
// in use, and returns the number of bytes written.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store: backup: %w", err)
	}
	return n, nil
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func getJSON(b *bolt.Bucket, key []byte, v any) error {
	data := b.Get(key)
	if data == nil {
		return fleet.ErrNotFound
	}
	return json.Unmarshal(data, v)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}
