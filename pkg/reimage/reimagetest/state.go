package reimagetest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/reimage"
)

// State is an in-memory reimage.State with the store's semantics (Assign
// writes history only for hosts that change; Image resolves NAME@latest to
// the newest Created). Safe for concurrent use.
type State struct {
	mu       sync.Mutex
	hosts    map[string]fleet.Host
	images   map[string]fleet.Image
	history  map[string][]fleet.HistoryEntry
	events   []fleet.Event
	rollouts map[string]fleet.Rollout
	rhosts   map[string][]fleet.RolloutHost
	seq      int
	// Now stamps history entries and new rollouts; nil means time.Now.
	Now func() time.Time
}

var _ reimage.State = (*State)(nil)

// NewState returns an empty state.
func NewState() *State {
	return &State{hosts: map[string]fleet.Host{}, images: map[string]fleet.Image{},
		history: map[string][]fleet.HistoryEntry{}, rollouts: map[string]fleet.Rollout{},
		rhosts: map[string][]fleet.RolloutHost{}}
}

func (s *State) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// AddImage stores an image (Ref is set from Name and Version).
func (s *State) AddImage(im fleet.Image) fleet.Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	im.Ref = im.Name + "@" + im.Version
	s.images[im.Ref] = im
	return im
}

// PutHost stores a host as given.
func (s *State) PutHost(h fleet.Host) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts[h.Name] = h
}

// Report records a boot report as kilnd would: LastReport, and for booted
// BootedImage/BootedDigest/BootedAt.
func (s *State) Report(r fleet.BootReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hosts[r.Host]
	if !ok {
		return
	}
	rc := r
	h.LastReport = &rc
	if r.Phase == fleet.PhaseBooted {
		h.BootedImage, h.BootedDigest, h.BootedAt = r.Image, r.Digest, r.Time
	}
	s.hosts[r.Host] = h
}

// GetHost implements reimage.Fleet.
func (s *State) GetHost(ctx context.Context, name string) (fleet.Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hosts[name]
	if !ok {
		return h, fmt.Errorf("host %s: %w", name, fleet.ErrNotFound)
	}
	return h, nil
}

// ListHosts implements reimage.Fleet.
func (s *State) ListHosts(ctx context.Context, sel fleet.Selector) ([]fleet.Host, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []fleet.Host
	for _, h := range s.hosts {
		if sel.Matches(h.Labels) {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Image implements reimage.Fleet.
func (s *State) Image(ctx context.Context, ref string) (fleet.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.imageLocked(ref)
}

func (s *State) imageLocked(ref string) (fleet.Image, error) {
	r, err := fleet.ParseRef(ref)
	if err != nil {
		return fleet.Image{}, err
	}
	if !r.IsLatest() {
		im, ok := s.images[r.String()]
		if !ok {
			return im, fmt.Errorf("image %s: %w", r, fleet.ErrNotFound)
		}
		return im, nil
	}
	var best fleet.Image
	for _, im := range s.images {
		if im.Name == r.Name && (best.Ref == "" || im.Created.After(best.Created)) {
			best = im
		}
	}
	if best.Ref == "" {
		return best, fmt.Errorf("image %s: %w", r, fleet.ErrNotFound)
	}
	return best, nil
}

// Assign implements reimage.Fleet.
func (s *State) Assign(ctx context.Context, hosts []string, ref, actor, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.imageLocked(ref)
	if err != nil {
		return err
	}
	for _, n := range hosts {
		if _, ok := s.hosts[n]; !ok {
			return fmt.Errorf("host %s: %w", n, fleet.ErrNotFound)
		}
	}
	now := s.now()
	for _, n := range hosts {
		h := s.hosts[n]
		if h.DesiredImage == im.Ref {
			continue
		}
		s.history[n] = append(s.history[n], fleet.HistoryEntry{Time: now, From: h.DesiredImage, To: im.Ref, Actor: actor, Reason: reason})
		h.DesiredImage = im.Ref
		s.hosts[n] = h
	}
	return nil
}

// History implements reimage.Fleet.
func (s *State) History(ctx context.Context, host string) ([]fleet.HistoryEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.hosts[host]; !ok {
		return nil, fmt.Errorf("host %s: %w", host, fleet.ErrNotFound)
	}
	return slices.Clone(s.history[host]), nil
}

// AppendEvent implements reimage.Events.
func (s *State) AppendEvent(ctx context.Context, e fleet.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.Seq = uint64(len(s.events) + 1)
	s.events = append(s.events, e)
	return nil
}

// Events returns every event appended so far.
func (s *State) Events() []fleet.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// CreateRollout implements reimage.Rollouts.
func (s *State) CreateRollout(ctx context.Context, r fleet.Rollout, hosts []fleet.RolloutHost) (fleet.Rollout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(hosts) != len(r.Hosts) {
		return r, fmt.Errorf("%w: %d host records for %d hosts", fleet.ErrInvalid, len(hosts), len(r.Hosts))
	}
	if r.ID == "" {
		s.seq++
		r.ID = fmt.Sprintf("r-%06d", s.seq)
	}
	if _, ok := s.rollouts[r.ID]; ok {
		return r, fmt.Errorf("rollout %s: %w", r.ID, fleet.ErrExists)
	}
	if r.Created.IsZero() {
		r.Created = s.now()
	}
	r.Hosts = slices.Clone(r.Hosts)
	s.rollouts[r.ID] = r
	s.rhosts[r.ID] = slices.Clone(hosts)
	return r, nil
}

// PutRollout implements reimage.Rollouts.
func (s *State) PutRollout(ctx context.Context, r fleet.Rollout) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.rollouts[r.ID]
	if !ok {
		return fmt.Errorf("rollout %s: %w", r.ID, fleet.ErrNotFound)
	}
	r.Hosts = old.Hosts
	s.rollouts[r.ID] = r
	return nil
}

// Rollout implements reimage.Rollouts.
func (s *State) Rollout(ctx context.Context, id string) (fleet.Rollout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rollouts[id]
	if !ok {
		return r, fmt.Errorf("rollout %s: %w", id, fleet.ErrNotFound)
	}
	r.Hosts = slices.Clone(r.Hosts)
	return r, nil
}

// Rollouts implements reimage.Rollouts (oldest first, without Hosts).
func (s *State) Rollouts(ctx context.Context) ([]fleet.Rollout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []fleet.Rollout{}
	for _, r := range s.rollouts {
		r.Hosts = nil
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// RolloutHosts implements reimage.Rollouts.
func (s *State) RolloutHosts(ctx context.Context, id string) ([]fleet.RolloutHost, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs, ok := s.rhosts[id]
	if !ok {
		return nil, fmt.Errorf("rollout %s: %w", id, fleet.ErrNotFound)
	}
	return slices.Clone(hs), nil
}

// UpdateRolloutHosts implements reimage.Rollouts.
func (s *State) UpdateRolloutHosts(ctx context.Context, id string, hosts []fleet.RolloutHost) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	hs, ok := s.rhosts[id]
	if !ok {
		return fmt.Errorf("rollout %s: %w", id, fleet.ErrNotFound)
	}
	for _, h := range hosts {
		if h.Index < 0 || h.Index >= len(hs) || hs[h.Index].Host != h.Host {
			return fmt.Errorf("rollout %s host %s index %d: %w", id, h.Host, h.Index, fleet.ErrInvalid)
		}
	}
	for _, h := range hosts {
		hs[h.Index] = h
	}
	return nil
}
