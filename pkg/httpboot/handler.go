package httpboot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// Hosts is the state the boot endpoints read and write; *store.Store
// implements it. Its methods must be safe for concurrent use.
type Hosts interface {
	// HostByMAC returns the host that owns the normalised mac, or an error
	// wrapping fleet.ErrNotFound.
	HostByMAC(ctx context.Context, mac string) (fleet.Host, error)
	// Image returns the manifest ref names, resolving NAME@latest.
	Image(ctx context.Context, ref string) (fleet.Image, error)
	// IssueBoot records a new boot attempt for host into img via mac and
	// returns its token (the store keeps only a hash of it); older attempts
	// of the host become stale.
	IssueBoot(ctx context.Context, host, mac string, img fleet.Image) (token string, err error)
	// RecordReport stores a report for the attempt that token names; errors
	// wrap fleet.ErrNotFound (unknown token) or fleet.ErrStale (superseded
	// or finished attempt), fleet.ErrInvalid (bad phase/digest). For
	// PhaseBooted it sets the host's BootedImage/BootedDigest/BootedAt.
	// Returns the stored report (with Host, Image, Attempt filled).
	RecordReport(ctx context.Context, token string, r fleet.BootReport) (fleet.BootReport, error)
}

// Blobs opens verified, content-addressed blobs; *imagestore.Store
// implements it. Open must be safe for concurrent use.
type Blobs interface {
	// Open returns the verified blob's file, or an error wrapping
	// fleet.ErrNotFound. The caller closes the file.
	Open(d fleet.Digest) (*os.File, error)
}

// Handler serves the boot endpoints (see the package documentation). It is
// safe for concurrent use.
type Handler struct {
	cfg    settings
	hosts  Hosts
	blobs  Blobs
	fw     fs.FS
	log    *slog.Logger
	m      *metrics
	mux    *http.ServeMux
	routes []route
}

type route struct {
	pattern string
	h       http.Handler
}

// New returns a Handler. hosts and blobs are required. fw holds the firmware
// files served under /firmware/ by their base names (firmware.FS()); nil
// serves none (404). log nil discards. reg nil registers no metrics;
// otherwise the collectors are registered on it and an error is returned if
// that fails (for example, a second Handler on the same registry). An
// invalid cfg gives an error wrapping ErrConfig that names the field.
func New(cfg Config, hosts Hosts, blobs Blobs, fw fs.FS, log *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if hosts == nil {
		return nil, fmt.Errorf("%w: hosts is nil", ErrConfig)
	}
	if blobs == nil {
		return nil, fmt.Errorf("%w: blobs is nil", ErrConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: s, hosts: hosts, blobs: blobs, fw: fw, log: log, m: m, mux: http.NewServeMux()}
	h.routes = []route{
		{"GET /boot/{file}", m.instrument(epScript, http.HandlerFunc(h.serveScript))},
		{"POST /boot/report", m.instrument(epReport, http.HandlerFunc(h.serveReport))},
		{"GET /blobs/sha256/{hex}", m.instrument(epBlob, http.HandlerFunc(h.serveBlob))},
		{"GET /firmware/{name}", m.instrument(epFirmware, http.HandlerFunc(h.serveFirmware))},
	}
	h.Mount(h.mux)
	return h, nil
}

// ServeHTTP serves the boot endpoints; any other path gets 404 and a wrong
// method 405.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Mount registers the boot endpoints' patterns on mux, next to whatever else
// it serves (kilnd's /api/v1). It panics, as ServeMux.Handle does, if a
// pattern conflicts with one already registered; call it once per mux.
func (h *Handler) Mount(mux *http.ServeMux) {
	for _, rt := range h.routes {
		mux.Handle(rt.pattern, rt.h)
	}
}

// Serve serves the boot endpoints alone on ln (kilnd's optional separate
// boot listener) until ctx is cancelled, then shuts down gracefully, waiting
// up to 10 s for requests in flight. It returns nil after a shutdown caused
// by ctx, or the listener's error. ln is closed when Serve returns.
func (h *Handler) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	done := make(chan error, 1)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("httpboot: serve: %w", err)
	}
	if err := <-done; err != nil {
		return fmt.Errorf("httpboot: shutdown: %w", err)
	}
	return nil
}

// serverBase returns the base URL hosts use to reach kilnd, or "" when it
// cannot be derived from r safely.
func (h *Handler) serverBase(r *http.Request) string {
	if h.cfg.server != "" {
		return h.cfg.server
	}
	host := r.Host
	if host == "" || !safeValue(host) || strings.ContainsAny(host, "/?#@\\") {
		return ""
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + host
}

// serveScript answers GET /boot/<mac>.ipxe.
func (h *Handler) serveScript(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	raw, ok := strings.CutSuffix(r.PathValue("file"), ".ipxe")
	if !ok {
		http.Error(w, "not found: want /boot/<mac>.ipxe", http.StatusNotFound)
		return
	}
	mac, err := fleet.NormalizeMAC(raw)
	if err != nil || strings.TrimSpace(raw) != raw {
		h.script(w, r, http.StatusBadRequest, "", exitScript("the script URL does not name an Ethernet MAC"))
		return
	}
	log := h.log.With("mac", mac)
	host, err := h.hosts.HostByMAC(r.Context(), mac)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		log.Info("boot script for an unknown mac")
		h.script(w, r, http.StatusNotFound, kindUnknown, exitScript("no host has mac "+mac))
		return
	case err != nil:
		log.Error("boot script: host lookup failed", "err", err)
		h.script(w, r, http.StatusInternalServerError, "", exitScript("kilnd could not look up mac "+mac))
		return
	}
	log = log.With("host", host.Name)
	switch {
	case host.NetbootDisabled:
		log.Info("boot script: netboot disabled")
		h.script(w, r, http.StatusOK, kindExit, exitScript("netboot is disabled for host "+host.Name))
		return
	case host.DesiredImage == "":
		log.Info("boot script: no desired image")
		h.script(w, r, http.StatusOK, kindExit, exitScript("host "+host.Name+" has no desired image"))
		return
	}
	log = log.With("image", host.DesiredImage)
	fail := func(msg string, err error) {
		log.Error(msg, "err", err)
		h.script(w, r, http.StatusInternalServerError, "", exitScript("kilnd could not render the boot script of host "+host.Name))
	}
	server := h.serverBase(r)
	if server == "" {
		log.Warn("boot script: no server URL configured and the request's Host is unusable", "request_host", r.Host)
		h.script(w, r, http.StatusBadRequest, "", exitScript("kilnd cannot tell its own address, set its server URL"))
		return
	}
	img, err := h.hosts.Image(r.Context(), host.DesiredImage)
	if err != nil {
		fail("boot script: desired image", err)
		return
	}
	ref, err := h.cfg.checkImage(img)
	if err != nil {
		fail("boot script: image cannot be booted", err)
		return
	}
	p := bootParams{server: server, host: host.Name, mac: mac, ref: ref, img: img, token: "x"}
	if _, err := h.cfg.cmdline(p); err != nil { // refuse before issuing a token
		fail("boot script: kernel command line", err)
		return
	}
	if r.Method == http.MethodHead { // no boot attempt for a HEAD
		h.script(w, r, http.StatusOK, "", "")
		return
	}
	p.token, err = h.hosts.IssueBoot(r.Context(), host.Name, mac, img)
	if err != nil {
		fail("boot script: issue boot attempt", err)
		return
	}
	if !tokenRE.MatchString(p.token) {
		fail("boot script: store issued an unusable token", fmt.Errorf("%w: token is not URL-safe base64", ErrUnsafeScript))
		return
	}
	body, err := h.cfg.bootScript(p)
	if err != nil {
		fail("boot script: render", err)
		return
	}
	log.Info("boot script issued", "image", ref, "digest", img.Rootfs.Digest)
	h.script(w, r, http.StatusOK, kindBoot, body)
}

// script writes an iPXE script answer and counts it by kind ("" and HEAD
// requests are not counted).
func (h *Handler) script(w http.ResponseWriter, r *http.Request, status int, kind, body string) {
	if kind != "" && r.Method != http.MethodHead {
		h.m.scripts.WithLabelValues(kind).Inc()
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}
