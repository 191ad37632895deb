package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/bmc"
	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/imagestore"
	"github.com/immutableinfra/kiln/pkg/reimage"
	"github.com/immutableinfra/kiln/pkg/secret"
	"github.com/immutableinfra/kiln/pkg/store"
	"github.com/immutableinfra/kiln/pkg/testtool"
)

const (
	testToken = "tok-0123456789abcdef"
	testActor = "alice@ops1"
	kver      = "6.1.0-99-test"
)

// clock is a deterministic clock shared by the store and the image store:
// every call advances it by one second from a fixed start.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

// recorder is an http.RoundTripper that keeps a copy of every response body
// the client receives, so a test can scan all of them.
type recorder struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies [][]byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.bodies = append(r.bodies, b)
	r.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func (r *recorder) all() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bodies)
}

// fakePower implements api.Power over an in-memory power state per host.
type fakePower struct {
	mu    sync.Mutex
	state map[string]string
	calls []string
}

func (p *fakePower) PowerState(ctx context.Context, host string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.state[host]
	if !ok {
		return "", fmt.Errorf("power of host %s: %w", host, fleet.ErrNotFound)
	}
	return s, nil
}

func (p *fakePower) SetPower(ctx context.Context, host, action string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.state[host]; !ok {
		return fmt.Errorf("power of host %s: %w", host, fleet.ErrNotFound)
	}
	p.calls = append(p.calls, host+" "+action)
	switch action {
	case "on", "cycle":
		p.state[host] = "on"
	case "off":
		p.state[host] = "off"
	}
	return nil
}

// rolloutCall is one call the fake rollout engine received.
type rolloutCall struct {
	Method  string
	ID      string
	Host    string
	To      string
	Actor   string
	Start   reimage.Request
	Refresh reimage.RefreshRequest
}

// fakeRollouts implements api.Rollouts in memory and records every call.
type fakeRollouts struct {
	mu          sync.Mutex
	now         func() time.Time
	rollouts    map[string]fleet.Rollout
	calls       []rolloutCall
	nothingToDo bool
	startErr    error
}

func newFakeRollouts(now func() time.Time) *fakeRollouts {
	return &fakeRollouts{now: now, rollouts: map[string]fleet.Rollout{}}
}

func (f *fakeRollouts) record(c rolloutCall) {
	f.calls = append(f.calls, c)
}

func (f *fakeRollouts) lastCall() rolloutCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return rolloutCall{}
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeRollouts) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeRollouts) create(kind, image string, hosts []string, batch, maxFail int, timeout time.Duration, actor, reason string) fleet.Rollout {
	id := fmt.Sprintf("r-test-%d", len(f.rollouts)+1)
	ro := fleet.Rollout{ID: id, Kind: kind, Image: image, Digest: fleet.Digest("sha256:" + strings.Repeat("ab", 32)),
		Hosts: hosts, Batch: batch, MaxFailures: maxFail, BootTimeout: timeout, State: fleet.RolloutRunning,
		Actor: actor, Reason: reason, Created: f.now()}
	ro.Started = ro.Created
	ro.Counts = fleet.RolloutCounts{Total: len(hosts), Pending: len(hosts)}
	f.rollouts[id] = ro
	return ro
}

func (f *fakeRollouts) Start(ctx context.Context, req reimage.Request) (fleet.Rollout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(rolloutCall{Method: "Start", Actor: req.Actor, Start: req})
	if f.startErr != nil {
		return fleet.Rollout{}, f.startErr
	}
	ro := f.create(fleet.KindReimage, req.Image, req.Hosts, req.Batch, req.MaxFailures, req.BootTimeout, req.Actor, req.Reason)
	ro.Selector, ro.AutoRevert = req.Selector, req.AutoRevert
	f.rollouts[ro.ID] = ro
	return ro, nil
}

func (f *fakeRollouts) Refresh(ctx context.Context, req reimage.RefreshRequest) (fleet.Rollout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(rolloutCall{Method: "Refresh", Actor: req.Actor, Refresh: req})
	if f.nothingToDo {
		return fleet.Rollout{}, fmt.Errorf("refresh %s: %w: every selected host runs %s@latest", req.Image, reimage.ErrNothingToDo, req.Image)
	}
	return f.create(fleet.KindRefresh, req.Image+"@2", []string{"n1"}, req.Batch, req.MaxFailures, req.BootTimeout, req.Actor, req.Reason), nil
}

func (f *fakeRollouts) Revert(ctx context.Context, req reimage.RevertRequest) (fleet.Rollout, error) {
	host, to, actor := req.Host, req.To, req.Actor
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(rolloutCall{Method: "Revert", Host: host, To: to, Actor: actor})
	if to == "" {
		to = "prev@1"
	}
	return f.create(fleet.KindRevert, to, []string{host}, 1, 0, req.BootTimeout, actor, req.Reason), nil
}

func (f *fakeRollouts) transition(method, id, actor string, to fleet.RolloutState) (fleet.Rollout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(rolloutCall{Method: method, ID: id, Actor: actor})
	ro, ok := f.rollouts[id]
	if !ok {
		return fleet.Rollout{}, fmt.Errorf("rollout %s: %w", id, fleet.ErrNotFound)
	}
	if err := ro.SetState(to, f.now()); err != nil {
		return fleet.Rollout{}, err
	}
	f.rollouts[id] = ro
	return ro, nil
}

func (f *fakeRollouts) Pause(ctx context.Context, id, actor string) (fleet.Rollout, error) {
	return f.transition("Pause", id, actor, fleet.RolloutPaused)
}

func (f *fakeRollouts) Resume(ctx context.Context, id, actor string) (fleet.Rollout, error) {
	return f.transition("Resume", id, actor, fleet.RolloutRunning)
}

func (f *fakeRollouts) Cancel(ctx context.Context, id, actor string) (fleet.Rollout, error) {
	return f.transition("Cancel", id, actor, fleet.RolloutCancelled)
}

func (f *fakeRollouts) Get(ctx context.Context, id string) (fleet.Rollout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ro, ok := f.rollouts[id]
	if !ok {
		return fleet.Rollout{}, fmt.Errorf("rollout %s: %w", id, fleet.ErrNotFound)
	}
	return ro, nil
}

func (f *fakeRollouts) List(ctx context.Context) ([]fleet.Rollout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fleet.Rollout
	for _, ro := range f.rollouts {
		out = append(out, ro)
	}
	slices.SortFunc(out, func(a, b fleet.Rollout) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (f *fakeRollouts) Hosts(ctx context.Context, id string) ([]fleet.RolloutHost, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ro, ok := f.rollouts[id]
	if !ok {
		return nil, fmt.Errorf("rollout %s: %w", id, fleet.ErrNotFound)
	}
	hosts := fleet.NewRolloutHosts(&ro)
	if len(hosts) > 0 {
		hosts[0].State, hosts[0].Attempts, hosts[0].Started, hosts[0].Updated = fleet.HostWaiting, 1, ro.Created, ro.Created
	}
	return hosts, nil
}

// env is a running API: a real store, image store and secret box behind
// api.NewServer on a loopback httptest server, with fakes for power and
// rollouts, and a client that records every response body.
type env struct {
	t        *testing.T
	clock    *clock
	st       *store.Store
	dbPath   string
	images   *imagestore.Store
	box      *secret.Box
	power    *fakePower
	rollouts *fakeRollouts
	log      *testtool.SyncBuffer
	srv      *httptest.Server
	rec      *recorder
	c        *api.Client
	ctx      context.Context
}

// envOpt adjusts the server config before the server starts.
type envOpt func(*api.Config)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, clock: newClock(), log: &testtool.SyncBuffer{}, ctx: context.Background(), dbPath: filepath.Join(dir, "kiln.db")}
	logger := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.Open(e.dbPath, store.Options{Now: e.clock.Now, NoSync: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	images, err := imagestore.New(imagestore.Config{Dir: filepath.Join(dir, "blobs"), Now: e.clock.Now,
		KilnInit: func() ([]byte, error) { return []byte("\x7fELF fake kiln-init"), nil }}, st, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	box, err := secret.New(bytes.Repeat([]byte{7}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	e.st, e.images, e.box = st, images, box
	e.power = &fakePower{state: map[string]string{}}
	e.rollouts = newFakeRollouts(e.clock.Now)
	cfg := api.Config{Store: st, Images: images, Sealer: box, Power: e.power, Rollouts: e.rollouts, Token: testToken,
		CheckBMC: func(u string) error { _, err := bmc.ParseURL(u); return err }, Logger: logger}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := api.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	e.rec = &recorder{next: e.srv.Client().Transport}
	e.c = e.client(testToken)
	return e
}

// client returns an API client with token that records into e.rec.
func (e *env) client(token string) *api.Client {
	e.t.Helper()
	c, err := api.NewClient(e.srv.URL, token, testActor, &http.Client{Transport: e.rec})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// raw sends a hand-made request with the admin token and returns the status
// and body.
func (e *env) raw(method, path, contentType string, body io.Reader) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Transport: e.rec}).Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) addHost(name, mac string, labels map[string]string) fleet.Host {
	e.t.Helper()
	h, err := e.c.CreateHost(e.ctx, api.HostRequest{Name: name, MACs: []string{mac}, Labels: labels})
	if err != nil {
		e.t.Fatalf("create host %s: %v", name, err)
	}
	return h
}

// importRootfs imports a squashfs file (rootfs only) and returns the image.
func (e *env) importRootfs(ref, path string) fleet.Image {
	e.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	res, err := e.c.ImportImage(e.ctx, ref, "", "console=ttyS0", api.ImportFiles{Rootfs: f})
	if err != nil {
		e.t.Fatalf("import %s: %v", ref, err)
	}
	return res.Image
}

// wantStatus checks that err is an *api.StatusError with code whose message
// contains every string in want.
func wantStatus(t *testing.T, err error, code int, want ...string) *api.StatusError {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T): want a StatusError %d", err, err, code)
	}
	if se.Code != code {
		t.Fatalf("status %d (%s), want %d", se.Code, se.Message, code)
	}
	for _, w := range want {
		if !strings.Contains(se.Message, w) {
			t.Fatalf("message %q does not contain %q", se.Message, w)
		}
	}
	return se
}

// makeSquashfs builds a real squashfs with a kernel and modules under
// lib/modules; release makes the content (and so the digest) differ.
func makeSquashfs(t *testing.T, release string) string {
	t.Helper()
	mk := testtool.Need(t, "mksquashfs")
	dir := t.TempDir()
	files := map[string]string{
		"boot/vmlinuz-" + kver:                                    "KERNEL " + kver,
		"lib/modules/" + kver + "/modules.dep":                    "kernel/fs/squashfs/squashfs.ko:\n",
		"lib/modules/" + kver + "/kernel/fs/squashfs/squashfs.ko": "\x7fELF squashfs",
		"etc/kiln-release":                                        release,
		"sbin/init":                                               "#!/bin/sh\n",
	}
	for p, c := range files {
		full := filepath.Join(dir, "root", p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "rootfs.squashfs")
	if b, err := exec.Command(mk, filepath.Join(dir, "root"), out, "-comp", "gzip", "-noappend", "-quiet", "-all-root").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, b)
	}
	return out
}

func sha256File(t *testing.T, path string) fleet.Digest {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return fleet.Digest("sha256:" + hex.EncodeToString(s[:]))
}
