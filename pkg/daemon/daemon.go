package daemon

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/immutableinfra/kiln/firmware"
	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/bmc"
	"github.com/immutableinfra/kiln/pkg/dhcp"
	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/hostpower"
	"github.com/immutableinfra/kiln/pkg/httpboot"
	"github.com/immutableinfra/kiln/pkg/imagestore"
	"github.com/immutableinfra/kiln/pkg/reimage"
	"github.com/immutableinfra/kiln/pkg/secret"
	"github.com/immutableinfra/kiln/pkg/store"
	"github.com/immutableinfra/kiln/pkg/tftp"
)

// TokenFile is the admin token's file name in the data dir.
const TokenFile = "admin.token"

// shutdownTimeout bounds how long in-flight HTTP requests may take to finish
// after the context ends.
const shutdownTimeout = 15 * time.Second

// NewLogger returns the logger cfg asks for, writing to w.
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Run starts kilnd and blocks until ctx ends (clean shutdown: in-flight
// requests finish, the database closes) or a service fails.
func Run(ctx context.Context, cfg Config, logw io.Writer) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	log := NewLogger(cfg, logw)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, "kiln.db"), store.Options{Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	token, err := adminToken(filepath.Join(cfg.DataDir, TokenFile))
	if err != nil {
		return err
	}
	box, err := secret.LoadOrCreateKey(cfg.SecretKey)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	images, err := imagestore.New(imagestore.Config{Dir: filepath.Join(cfg.DataDir, "blobs"), KilnInit: kilnInit(cfg.KilnInit),
		Retention: cfg.Retention}, st, log.With("component", "images"), reg)
	if err != nil {
		return err
	}
	bmcs, err := bmc.New(bmc.Config{Concurrency: cfg.BMCConcurrency, Timeout: cfg.BMCTimeout}, log.With("component", "bmc"), reg)
	if err != nil {
		return err
	}
	power := &hostpower.Power{BMC: bmcs, Hosts: st, Opener: box}
	engine, err := reimage.New(reimage.Config{BootTimeout: cfg.BootTimeout}, st, power, reimage.SystemClock(), log.With("component", "reimage"), reg)
	if err != nil {
		return err
	}

	// Everything is opened before anything is served: a listener that
	// cannot be opened stops kilnd before it answers anyone, and closes what
	// was opened.
	var sv services
	defer sv.abort()
	apiLn, err := sv.listen("api-listen", cfg.APIListen)
	if err != nil {
		return err
	}
	bootLn := apiLn
	if cfg.BootListen != "" {
		if bootLn, err = sv.listen("boot-listen", cfg.BootListen); err != nil {
			return err
		}
	}
	advertise, err := advertiseIP(cfg)
	if err != nil {
		return err
	}
	serverURL, err := bootURL(cfg, advertise, bootLn.Addr())
	if err != nil {
		return err
	}

	stateMount := cfg.StateMount
	if stateMount == "off" {
		stateMount = ""
	}
	boot, err := httpboot.New(httpboot.Config{ServerURL: serverURL, ExtraCmdline: cfg.KernelCmdline, StateMount: stateMount, OnReport: engine.BootReported},
		st, images, firmware.FS(), log.With("component", "httpboot"), reg)
	if err != nil {
		return err
	}
	apiSrv, err := api.NewServer(api.Config{Store: st, Images: images, Sealer: box, Power: power, Rollouts: engine,
		CheckBMC: func(u string) error { _, err := bmc.ParseURL(u); return err }, Token: token, Logger: log.With("component", "api")})
	if err != nil {
		return err
	}

	apiMux := http.NewServeMux()
	apiMux.Handle("/api/v1/", apiSrv)
	apiMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	apiMux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if cfg.BootListen == "" {
		for _, p := range []string{"/boot/", "/blobs/", "/firmware/"} {
			apiMux.Handle(p, boot)
		}
	}

	sv.add(httpService(apiLn, apiMux, log))
	if cfg.BootListen != "" {
		sv.add(func(ctx context.Context) error { return boot.Serve(ctx, bootLn) })
	}
	if cfg.PprofListen != "" {
		ln, err := sv.listen("pprof-listen", cfg.PprofListen)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		sv.add(httpService(ln, mux, log))
	}
	sv.add(engine.Run)
	if cfg.Interface != "" {
		if err := netbootServices(&sv, cfg, advertise, serverURL, st, log, reg); err != nil {
			return err
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	for _, run := range sv.start() {
		g.Go(func() error { return run(ctx) })
	}
	log.Info("kilnd started", "data_dir", cfg.DataDir, "api", apiLn.Addr().String(), "server_url", serverURL.String(),
		"interface", cfg.Interface, "dhcp", dhcpMode(cfg))
	err = g.Wait()
	log.Info("kilnd stopped", "err", err)
	return err
}

func dhcpMode(cfg Config) string {
	if cfg.Interface == "" {
		return "off"
	}
	return cfg.DHCPMode
}

// services is what Run serves: a serve function per opened listener, and
// how to close the listeners when Run gives up before serving.
type services struct {
	run    []func(context.Context) error
	closer []io.Closer
}

func (s *services) add(run func(context.Context) error) { s.run = append(s.run, run) }

// listen opens a TCP listener that abort closes; field names the setting.
func (s *services) listen(field, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	s.closer = append(s.closer, ln)
	return ln, nil
}

// start hands the serve functions over: the listeners are theirs to close.
func (s *services) start() []func(context.Context) error {
	s.closer = nil
	return s.run
}

// abort closes every listener opened before start.
func (s *services) abort() {
	for _, c := range s.closer {
		c.Close()
	}
}

// httpService serves h on ln until ctx ends, then shuts down gracefully:
// requests in flight get shutdownTimeout to finish.
func httpService(ln net.Listener, h http.Handler, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		select {
		case err := <-served:
			return fmt.Errorf("http %s: %w", ln.Addr(), err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		err := srv.Shutdown(sctx)
		<-served
		return err
	}
}

// netbootServices opens DHCP and TFTP on the interface and adds them to sv.
func netbootServices(sv *services, cfg Config, advertise netip.Addr, serverURL *url.URL, st *store.Store, log *slog.Logger, reg prometheus.Registerer) error {
	if cfg.DHCPMode != "off" {
		dcfg := dhcp.Config{Mode: dhcp.Mode(cfg.DHCPMode), ServerIP: advertise, HTTPBase: *serverURL, Discovery: cfg.Discovery, NoTFTP: cfg.TFTP == "off",
			Firmware: func(name string) bool { _, err := fs.Stat(firmware.FS(), name); return err == nil }}
		if cfg.DHCPSubnet != "" {
			pool, err := parsePool(cfg)
			if err != nil {
				return err
			}
			dcfg.Pool = pool
		}
		srv, err := dhcp.New(dcfg, st, st, log.With("component", "dhcp"), reg)
		if err != nil {
			return err
		}
		ports := []int{67}
		if dcfg.Mode == dhcp.ModeProxy {
			ports = append(ports, 4011) // PXE clients' requests to the proxy
		}
		for _, port := range ports {
			conn, err := dhcp.ListenInterface(cfg.Interface, port)
			if err != nil {
				return fmt.Errorf("dhcp on %s port %d: %w", cfg.Interface, port, err)
			}
			sv.closer = append(sv.closer, conn)
			sv.add(func(ctx context.Context) error { return srv.Serve(ctx, conn) })
		}
	}
	if cfg.TFTP == "on" {
		root := firmware.FS()
		if cfg.TFTPAssets != "" {
			// An os.Root, unlike os.DirFS, never follows a link out of the folder.
			assets, err := os.OpenRoot(cfg.TFTPAssets)
			if err != nil {
				return fmt.Errorf("tftp-assets: %w", err)
			}
			root = tftp.Overlay(root, assets.FS())
		}
		srv, err := tftp.New(tftp.Config{Root: root}, log.With("component", "tftp"), reg)
		if err != nil {
			return err
		}
		conn, err := net.ListenPacket("udp4", netip.AddrPortFrom(advertise, 69).String())
		if err != nil {
			return fmt.Errorf("tftp on %s: %w", advertise, err)
		}
		sv.closer = append(sv.closer, conn)
		sv.add(func(ctx context.Context) error { return srv.Serve(ctx, conn) })
	}
	return nil
}

func parsePool(cfg Config) (*dhcp.Pool, error) {
	bad := func(field, v string) error {
		return fmt.Errorf("config: %w: %s: %q", fleet.ErrInvalid, field, v)
	}
	subnet, err := netip.ParsePrefix(cfg.DHCPSubnet)
	if err != nil {
		return nil, bad("dhcp-subnet", cfg.DHCPSubnet)
	}
	lo, hi, ok := strings.Cut(cfg.DHCPRange, "-")
	start, err1 := netip.ParseAddr(strings.TrimSpace(lo))
	end, err2 := netip.ParseAddr(strings.TrimSpace(hi))
	if !ok || err1 != nil || err2 != nil {
		return nil, bad("dhcp-range", cfg.DHCPRange+" (want START-END)")
	}
	p := &dhcp.Pool{Subnet: subnet, Start: start, End: end, Domain: cfg.DHCPDomain, LeaseTime: cfg.DHCPLeaseTime}
	if cfg.DHCPRouter != "" {
		if p.Router, err = netip.ParseAddr(cfg.DHCPRouter); err != nil {
			return nil, bad("dhcp-router", cfg.DHCPRouter)
		}
	}
	for _, d := range cfg.DHCPDNS {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return nil, bad("dhcp-dns", d)
		}
		p.DNS = append(p.DNS, a)
	}
	return p, nil
}

// advertiseIP is cfg.AdvertiseIP or the interface's first IPv4 address; the
// zero Addr when neither is known (no netboot interface).
func advertiseIP(cfg Config) (netip.Addr, error) {
	if cfg.AdvertiseIP != "" {
		return netip.MustParseAddr(cfg.AdvertiseIP), nil
	}
	if cfg.Interface == "" {
		return netip.Addr{}, nil
	}
	a, err := dhcp.FirstIPv4(cfg.Interface)
	if err != nil {
		return a, fmt.Errorf("config: interface %q: %w; set advertise-ip", cfg.Interface, err)
	}
	return a, nil
}

// bootURL is cfg.ServerURL, or http://ADVERTISE:PORT of the boot listener.
func bootURL(cfg Config, advertise netip.Addr, ln net.Addr) (*url.URL, error) {
	if cfg.ServerURL != "" {
		return url.Parse(cfg.ServerURL)
	}
	ap, err := netip.ParseAddrPort(ln.String())
	if err != nil {
		return nil, err
	}
	host := advertise
	if !host.IsValid() {
		host = ap.Addr().Unmap()
		if host.IsUnspecified() {
			host = netip.MustParseAddr("127.0.0.1")
		}
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host.String(), strconv.Itoa(int(ap.Port())))}, nil
}

// adminToken reads the admin token, creating it (mode 0600) on first start.
func adminToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	t := base64.RawURLEncoding.EncodeToString(raw)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return t, nil
}

// kilnInit returns the loader of the kiln-init binary: the configured path,
// or kiln-init beside the running executable.
func kilnInit(path string) func() ([]byte, error) {
	return func() ([]byte, error) {
		p := path
		if p == "" {
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			p = filepath.Join(filepath.Dir(exe), "kiln-init")
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("kiln-init: %w (build it with `make build`, or set --kiln-init)", err)
		}
		return b, nil
	}
}
