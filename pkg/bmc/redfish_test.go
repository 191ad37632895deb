package bmc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/immutableinfra/kiln/pkg/bmc/redfishtest"
	"github.com/immutableinfra/kiln/pkg/testtool"
)

const rfPassword = "s3cr3t-Redfish-pw"

// redfishTarget returns a Target for srv (TLS not verified).
func redfishTarget(t *testing.T, host string, srv *redfishtest.Server, password string) Target {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return Target{Host: host, URL: "redfish://admin@" + u.Host, Password: password, InsecureTLS: true}
}

func newRedfish(t *testing.T, opts redfishtest.Options) *redfishtest.Server {
	t.Helper()
	if opts.User == "" {
		opts.User, opts.Password = "admin", rfPassword
	}
	srv := redfishtest.NewTLSServer(opts)
	t.Cleanup(srv.Close)
	return srv
}

func newTestManager(t *testing.T, cfg Config) (*Manager, *testtool.SyncBuffer, *prometheus.Registry) {
	t.Helper()
	lb := &testtool.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.Level(-10)}))
	reg := prometheus.NewRegistry()
	m, err := New(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, lb, reg
}

func TestRedfishPower(t *testing.T) {
	tests := []struct {
		name       string
		initial    string
		action     PowerAction
		wantPower  string
		wantResets []string
	}{
		{"on from off", "Off", ActionOn, "On", []string{"On"}},
		{"on when on is a no-op", "On", ActionOn, "On", nil},
		{"off from on", "On", ActionOff, "Off", []string{"ForceOff"}},
		{"off when off is a no-op", "Off", ActionOff, "Off", nil},
		{"cycle when on restarts", "On", ActionCycle, "On", []string{"ForceRestart"}},
		{"cycle when off powers on", "Off", ActionCycle, "On", []string{"On"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRedfish(t, redfishtest.Options{PowerState: tc.initial})
			m, _, reg := newTestManager(t, Config{Timeout: 5 * time.Second, PowerPollInterval: 10 * time.Millisecond})
			tg := redfishTarget(t, "r1-n1", srv, rfPassword)
			ctx := context.Background()
			before, err := m.PowerState(ctx, tg)
			if err != nil {
				t.Fatalf("PowerState: %v", err)
			}
			if want := PowerState(strings.ToLower(tc.initial)); before != want {
				t.Errorf("PowerState before = %q, want %q", before, want)
			}
			if err := m.SetPower(ctx, tg, tc.action); err != nil {
				t.Fatalf("SetPower(%s): %v", tc.action, err)
			}
			st := srv.State()
			if st.PowerState != tc.wantPower {
				t.Errorf("server power = %q, want %q", st.PowerState, tc.wantPower)
			}
			if strings.Join(st.Resets, ",") != strings.Join(tc.wantResets, ",") {
				t.Errorf("resets = %v, want %v", st.Resets, tc.wantResets)
			}
			if st.OpenSessions != 0 || st.SessionsCreated != 2 || st.SessionsDeleted != 2 {
				t.Errorf("sessions: created %d deleted %d open %d, want 2/2/0", st.SessionsCreated, st.SessionsDeleted, st.OpenSessions)
			}
			after, err := m.PowerState(ctx, tg)
			if err != nil {
				t.Fatal(err)
			}
			if want := PowerState(strings.ToLower(tc.wantPower)); after != want {
				t.Errorf("PowerState after = %q, want %q", after, want)
			}
			op := map[PowerAction]string{ActionOn: "power_on", ActionOff: "power_off", ActionCycle: "power_cycle"}[tc.action]
			if n := testutil.ToFloat64(m.metrics.ops.WithLabelValues("redfish", op, "success")); n != 1 {
				t.Errorf("kiln_bmc_operations_total{op=%s,outcome=success} = %v, want 1", op, n)
			}
			if n, err := testutil.GatherAndCount(reg, "kiln_bmc_operation_duration_seconds"); err != nil || n != 2 {
				t.Errorf("duration series = %d (%v), want 2", n, err)
			}
		})
	}
}

func TestRedfishNextBoot(t *testing.T) {
	tests := []struct {
		name        string
		initialMode string
		mode        BootMode
		dev         BootDevice
		wantTarget  string
		wantMode    string
	}{
		{"pxe uefi", "Legacy", BootUEFI, BootPXE, "Pxe", "UEFI"},
		{"pxe legacy", "UEFI", BootLegacy, BootPXE, "Pxe", "Legacy"},
		{"pxe auto keeps UEFI", "UEFI", BootAuto, BootPXE, "Pxe", "UEFI"},
		{"pxe auto keeps Legacy", "Legacy", BootAuto, BootPXE, "Pxe", "Legacy"},
		{"disk uefi", "UEFI", BootUEFI, BootDisk, "Hdd", "UEFI"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRedfish(t, redfishtest.Options{})
			m, _, _ := newTestManager(t, Config{Timeout: 5 * time.Second})
			tg := redfishTarget(t, "r1-n2", srv, rfPassword)
			// Put the BMC's current override mode in place first.
			if tc.initialMode == "Legacy" {
				if err := m.SetNextBoot(context.Background(), tg, BootDisk, BootLegacy); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.SetNextBoot(context.Background(), tg, tc.dev, tc.mode); err != nil {
				t.Fatalf("SetNextBoot: %v", err)
			}
			st := srv.State()
			if st.BootTarget != tc.wantTarget || st.BootEnabled != "Once" || st.BootMode != tc.wantMode {
				t.Errorf("boot override = %s/%s/%s, want %s/Once/%s", st.BootTarget, st.BootEnabled, st.BootMode, tc.wantTarget, tc.wantMode)
			}
			last := st.BootPatches[len(st.BootPatches)-1]
			if last["BootSourceOverrideEnabled"] != "Once" {
				t.Errorf("PATCH Boot = %v, want BootSourceOverrideEnabled Once", last)
			}
			if st.OpenSessions != 0 {
				t.Errorf("%d sessions left open", st.OpenSessions)
			}
		})
	}
}

func TestRedfishWrongPasswordIsScrubbedAuthError(t *testing.T) {
	// The server echoes the password it was sent in its 401 body, so
	// bmclib's own error text carries it: the Manager must scrub it.
	srv := newRedfish(t, redfishtest.Options{EchoCredentials: true})
	m, logs, _ := newTestManager(t, Config{Timeout: 5 * time.Second, Backoff: time.Millisecond})
	const wrong = "Wr0ng-pa55word-XYZ"
	tg := redfishTarget(t, "r1-n3", srv, wrong)
	ops := []struct {
		name string
		call func() error
	}{
		{"status", func() error { _, err := m.PowerState(context.Background(), tg); return err }},
		{"cycle", func() error { return m.SetPower(context.Background(), tg, ActionCycle) }},
		{"next boot", func() error { return m.SetNextBoot(context.Background(), tg, BootPXE, BootUEFI) }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			before := srv.State().FailedLogins
			err := op.call()
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("err = %v, want ErrAuth", err)
			}
			var be *Error
			if !errors.As(err, &be) || be.Host != "r1-n3" || be.BMC != strings.TrimPrefix(tg.URL, "redfish://admin@") {
				t.Errorf("err = %#v, want *Error for host r1-n3", err)
			}
			if strings.Contains(err.Error(), wrong) {
				t.Errorf("error text contains the password: %s", err)
			}
			if !strings.Contains(err.Error(), "[REDACTED]") {
				t.Errorf("error text %q lost the BMC's answer (want it with the password redacted)", err)
			}
			if n := srv.State().FailedLogins - before; n != 1 {
				t.Errorf("%d login attempts, want 1 (auth failures are not retried)", n)
			}
		})
	}
	if strings.Contains(logs.String(), wrong) {
		t.Errorf("log output contains the password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "failed") {
		t.Errorf("expected failures to be logged, got:\n%s", logs.String())
	}
	if n := testutil.ToFloat64(m.metrics.ops.WithLabelValues("redfish", "power_status", "auth")); n != 1 {
		t.Errorf("operations_total{outcome=auth} = %v, want 1", n)
	}
}

func TestRedfishTLSVerification(t *testing.T) {
	srv := newRedfish(t, redfishtest.Options{PowerState: "On"})
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tests := []struct {
		name     string
		insecure bool
		roots    *x509.CertPool
		wantErr  bool
	}{
		{"insecure accepts self-signed", true, nil, false},
		{"verified against the right CA", false, pool, false},
		{"unknown CA refused", false, x509.NewCertPool(), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _, _ := newTestManager(t, Config{Timeout: 5 * time.Second, Retries: -1, RootCAs: tc.roots})
			tg := redfishTarget(t, "r1-n4", srv, rfPassword)
			tg.InsecureTLS = tc.insecure
			st, err := m.PowerState(context.Background(), tg)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("PowerState succeeded with an untrusted certificate")
				}
				return
			}
			if err != nil || st != PowerOn {
				t.Fatalf("PowerState = %q, %v; want on", st, err)
			}
		})
	}
}

func TestRedfishTransientErrorsAreRetried(t *testing.T) {
	tests := []struct {
		name      string
		failures  int
		retries   int
		wantErr   bool
		wantTries float64
	}{
		{"one 503 then success", 1, 3, false, 1},
		{"more 503s than retries", 10, 2, true, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRedfish(t, redfishtest.Options{PowerState: "On"})
			m, _, _ := newTestManager(t, Config{Timeout: 5 * time.Second, Retries: tc.retries, Backoff: time.Millisecond})
			tg := redfishTarget(t, "r1-n5", srv, rfPassword)
			srv.FailNext(tc.failures, 503)
			st, err := m.PowerState(context.Background(), tg)
			if tc.wantErr != (err != nil) {
				t.Fatalf("PowerState = %q, %v; wantErr %v", st, err, tc.wantErr)
			}
			if !tc.wantErr && st != PowerOn {
				t.Errorf("PowerState = %q, want on", st)
			}
			if n := testutil.ToFloat64(m.metrics.retries.WithLabelValues("redfish", "power_status")); n != tc.wantTries {
				t.Errorf("retries = %v, want %v", n, tc.wantTries)
			}
			if s := srv.State(); s.OpenSessions != 0 {
				t.Errorf("%d sessions left open after retries", s.OpenSessions)
			}
		})
	}
}

func TestRedfishOneSessionPerBMC(t *testing.T) {
	srv := newRedfish(t, redfishtest.Options{PowerState: "On", Delay: 5 * time.Millisecond})
	m, _, _ := newTestManager(t, Config{Timeout: 10 * time.Second, Concurrency: 8})
	tg := redfishTarget(t, "r1-n6", srv, rfPassword)
	const callers = 12
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			switch i % 3 {
			case 0:
				_, err = m.PowerState(context.Background(), tg)
			case 1:
				err = m.SetNextBoot(context.Background(), tg, BootPXE, BootUEFI)
			default:
				err = m.SetPower(context.Background(), tg, ActionOn)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	st := srv.State()
	if st.SessionsCreated != callers || st.OpenSessions != 0 {
		t.Errorf("sessions created %d open %d, want %d and 0", st.SessionsCreated, st.OpenSessions, callers)
	}
	if st.MaxOpenSessions != 1 {
		t.Errorf("at most %d sessions were open at once on one BMC, want 1", st.MaxOpenSessions)
	}
}

func TestRedfishGlobalConcurrencyLimit(t *testing.T) {
	for _, limit := range []int{1, 3} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var g redfishtest.Gauge
			m, _, _ := newTestManager(t, Config{Timeout: 10 * time.Second, Concurrency: limit})
			var wg sync.WaitGroup
			for i := range 6 {
				srv := newRedfish(t, redfishtest.Options{PowerState: "On", Delay: 5 * time.Millisecond, Gauge: &g})
				tg := redfishTarget(t, fmt.Sprintf("r2-n%d", i), srv, rfPassword)
				for range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := m.PowerState(context.Background(), tg); err != nil {
							t.Error(err)
						}
					}()
				}
			}
			wg.Wait()
			if g.Max() > limit {
				t.Errorf("%d sessions open at once across BMCs, limit %d", g.Max(), limit)
			}
			if g.Current() != 0 {
				t.Errorf("%d sessions left open", g.Current())
			}
			if v := testutil.ToFloat64(m.metrics.inFlight); v != 0 {
				t.Errorf("in-flight gauge = %v after all calls returned", v)
			}
		})
	}
}

func TestQueuedCallerGivesUpOnContext(t *testing.T) {
	srv := newRedfish(t, redfishtest.Options{PowerState: "On", Delay: 200 * time.Millisecond})
	m, _, _ := newTestManager(t, Config{Timeout: 10 * time.Second})
	tg := redfishTarget(t, "r1-n7", srv, rfPassword)
	done := make(chan error, 1)
	go func() { _, err := m.PowerState(context.Background(), tg); done <- err }()
	// Wait until the first call holds the BMC.
	for srv.State().SessionsCreated == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.PowerState(ctx, tg)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("queued call with a cancelled context: err = %v, want context.Canceled", err)
	}
	if err := <-done; err != nil {
		t.Errorf("first call: %v", err)
	}
	if st := srv.State(); st.SessionsCreated != 1 || st.OpenSessions != 0 {
		t.Errorf("sessions created %d open %d, want 1 and 0", st.SessionsCreated, st.OpenSessions)
	}
}
