package bmc

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/bmc/redfishtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

// logBuffer is a concurrency-safe buffer behind a debug-level slog logger.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestManager(t *testing.T, cfg Config) (*Manager, *logBuffer, *prometheus.Registry) {
	t.Helper()
	lb := &logBuffer{}
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
