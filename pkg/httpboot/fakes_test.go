package httpboot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// fakeHosts implements Hosts in memory with the store's token semantics: a
// token names one attempt; a newer attempt of the host or a terminal phase
// makes it stale. Tokens are deterministic ("tok-<host>-<n>") so scripts can
// be compared with golden files.
type fakeHosts struct {
	mu       sync.Mutex
	hosts    map[string]fleet.Host // by name
	images   map[string]fleet.Image
	imageErr error
	attempts map[string]uint64  // host -> newest attempt id
	tokens   map[string]attempt // token -> attempt
	phase    map[uint64]string
	issued   []string // tokens in order
	reports  []fleet.BootReport
	next     uint64
}

type attempt struct {
	host, mac, image string
	id               uint64
}

func newFakeHosts(hosts []fleet.Host, images []fleet.Image) *fakeHosts {
	f := &fakeHosts{hosts: map[string]fleet.Host{}, images: map[string]fleet.Image{},
		attempts: map[string]uint64{}, tokens: map[string]attempt{}, phase: map[uint64]string{}}
	for _, h := range hosts {
		f.hosts[h.Name] = h
	}
	for _, im := range images {
		f.images[im.Ref] = im
	}
	return f
}

func (f *fakeHosts) HostByMAC(_ context.Context, mac string) (fleet.Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.hosts {
		if h.HasMAC(mac) {
			return h, nil
		}
	}
	return fleet.Host{}, fmt.Errorf("host with mac %s: %w", mac, fleet.ErrNotFound)
}

func (f *fakeHosts) Image(_ context.Context, ref string) (fleet.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.imageErr != nil {
		return fleet.Image{}, f.imageErr
	}
	im, ok := f.images[ref]
	if !ok {
		return fleet.Image{}, fmt.Errorf("image %s: %w", ref, fleet.ErrNotFound)
	}
	return im, nil
}

func (f *fakeHosts) IssueBoot(_ context.Context, host, mac string, img fleet.Image) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	tok := fmt.Sprintf("tok-%s-%d", host, f.next)
	f.attempts[host] = f.next
	f.tokens[tok] = attempt{host: host, mac: mac, image: img.Ref, id: f.next}
	f.issued = append(f.issued, tok)
	return tok, nil
}

func (f *fakeHosts) RecordReport(_ context.Context, token string, r fleet.BootReport) (fleet.BootReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := r.Validate(); err != nil {
		return r, err
	}
	a, ok := f.tokens[token]
	if !ok {
		return r, fmt.Errorf("boot token: %w", fleet.ErrNotFound)
	}
	if f.attempts[a.host] != a.id || fleet.Terminal(f.phase[a.id]) {
		return r, fmt.Errorf("boot token of host %s: %w", a.host, fleet.ErrStale)
	}
	f.phase[a.id] = r.Phase
	r.Host, r.Attempt, r.Image = a.host, a.id, a.image
	if r.Phase == fleet.PhaseBooted {
		h := f.hosts[a.host]
		h.BootedImage, h.BootedDigest = a.image, r.Digest
		f.hosts[a.host] = h
	}
	f.reports = append(f.reports, r)
	return r, nil
}

func (f *fakeHosts) issuedTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.issued...)
}

// dirBlobs implements Blobs on a directory of files named by their hex
// digest, as the image store keeps them.
type dirBlobs struct{ dir string }

func (b dirBlobs) Open(d fleet.Digest) (*os.File, error) {
	f, err := os.Open(filepath.Join(b.dir, d.Hex()))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, fleet.ErrNotFound)
	}
	return f, err
}

// putBlob writes data into dir under its digest and returns the digest.
func putBlob(t testing.TB, dir string, data []byte) fleet.Digest {
	t.Helper()
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(dir, h), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return fleet.Digest("sha256:" + h)
}

// digestOf returns the sha256 digest of s (for manifests in tests whose blobs
// are not served).
func digestOf(s string) fleet.Digest {
	sum := sha256.Sum256([]byte(s))
	return fleet.Digest("sha256:" + hex.EncodeToString(sum[:]))
}

// errorBlobs fails every Open with a non-NotFound error.
type errorBlobs struct{}

func (errorBlobs) Open(fleet.Digest) (*os.File, error) { return nil, errors.New("disk on fire") }
