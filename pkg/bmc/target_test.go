package bmc

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in      string
		want    Endpoint
		wantErr string
	}{
		{in: "ipmi://admin@10.1.2.7", want: Endpoint{DriverIPMI, "admin", "10.1.2.7", 623}},
		{in: "ipmi://admin@10.1.2.7:9623", want: Endpoint{DriverIPMI, "admin", "10.1.2.7", 9623}},
		{in: "redfish://root@bmc-r12.example.net", want: Endpoint{DriverRedfish, "root", "bmc-r12.example.net", 443}},
		{in: "REDFISH://root@bmc:8443/", want: Endpoint{DriverRedfish, "root", "bmc", 8443}},
		{in: "ipmi://ad%40min@[2001:db8::7]:623", want: Endpoint{DriverIPMI, "ad@min", "2001:db8::7", 623}},
		{in: "ipmi://admin@[2001:db8::7]", want: Endpoint{DriverIPMI, "admin", "2001:db8::7", 623}},
		{in: "10.1.2.7", wantErr: "missing scheme"},
		{in: "http://admin@10.1.2.7", wantErr: "unsupported scheme"},
		{in: "ipmi://10.1.2.7", wantErr: "missing user"},
		{in: "ipmi://@10.1.2.7", wantErr: "empty user"},
		{in: "ipmi://admin:hunter2@10.1.2.7", wantErr: "password must not be part"},
		{in: "ipmi://admin:p@ss:w@rd@10.1.2.7", wantErr: "password must not be part"},
		{in: "ipmi://admin@", wantErr: "missing host"},
		{in: "ipmi://admin@10.1.2.7:0", wantErr: "invalid port"},
		{in: "ipmi://admin@10.1.2.7:70000", wantErr: "invalid port"},
		{in: "ipmi://admin@10.1.2.7:x", wantErr: "invalid port"},
		{in: "ipmi://admin@2001:db8::7", wantErr: "brackets"},
		{in: "ipmi://admin@10.1.2.7/path", wantErr: "no path"},
		{in: "ipmi://admin@10.1.2.7?x=1", wantErr: "no path"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseURL(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseURL(%q) = %+v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				if !errors.Is(err, ErrInvalidURL) {
					t.Errorf("error %v does not wrap ErrInvalidURL", err)
				}
				for _, secret := range []string{"hunter2", "p@ss", "w@rd"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q echoes the password", err)
					}
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			again, err := ParseURL(got.String())
			if err != nil || again != got {
				t.Errorf("round trip through %q = %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestTargetNeverShowsPassword(t *testing.T) {
	const pw = "Sup3r-s3cret"
	targets := []Target{
		{Host: "r12-n07", URL: "ipmi://admin@10.1.2.7", Password: pw},
		{Host: "r12-n08", URL: "ipmi://admin:" + pw + "@10.1.2.8", Password: pw}, // invalid URL carrying it
	}
	for _, tg := range targets {
		t.Run(tg.Host, func(t *testing.T) {
			var sb strings.Builder
			log := slog.New(slog.NewJSONHandler(&sb, nil))
			log.Info("x", "target", tg)
			b, err := json.Marshal(tg)
			if err != nil {
				t.Fatal(err)
			}
			outputs := map[string]string{
				"String": tg.String(),
				"%v":     fmt.Sprintf("%v", tg),
				"%+v":    fmt.Sprintf("%+v", tg),
				"%#v":    fmt.Sprintf("%#v", tg),
				"%s":     fmt.Sprintf("%s", tg),
				"slog":   sb.String(),
				"json":   string(b),
			}
			for name, out := range outputs {
				if strings.Contains(out, pw) {
					t.Errorf("%s output contains the password: %s", name, out)
				}
				if !strings.Contains(out, tg.Host) && name != "json" {
					t.Errorf("%s output %q lacks the host name", name, out)
				}
			}
		})
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	got, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if got.Timeout != DefaultTimeout || got.Retries != DefaultRetries || got.Backoff != DefaultBackoff ||
		got.Concurrency != DefaultConcurrency || got.IPMICipherSuite != "3" ||
		got.PowerPollInterval != DefaultPowerPollInterval || got.PowerSettleTimeout != DefaultPowerSettleTimeout {
		t.Errorf("defaults = %+v", got)
	}
	if got, _ := (Config{Retries: -1}).withDefaults(); got.Retries != 0 {
		t.Errorf("Retries -1 gave %d retries, want 0", got.Retries)
	}
	bad := []struct {
		cfg   Config
		field string
	}{
		{Config{Timeout: -time.Second}, "Timeout"},
		{Config{Retries: -2}, "Retries"},
		{Config{Backoff: -1}, "Backoff"},
		{Config{Concurrency: -1}, "Concurrency"},
		{Config{IPMICipherSuite: "abc"}, "IPMICipherSuite"},
		{Config{IPMICipherSuite: "18"}, "IPMICipherSuite"},
		{Config{PowerPollInterval: -1}, "PowerPollInterval"},
		{Config{PowerSettleTimeout: -1}, "PowerSettleTimeout"},
		{Config{Backoff: time.Minute, MaxBackoff: time.Second}, "MaxBackoff"},
	}
	for _, tc := range bad {
		t.Run(tc.field, func(t *testing.T) {
			_, err := New(tc.cfg, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("New(%+v) error = %v, want one naming %s", tc.cfg, err, tc.field)
			}
		})
	}
}

func TestBackoffIsExponentialAndCapped(t *testing.T) {
	m, err := New(Config{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := m.backoff(i); got != w*time.Millisecond {
			t.Errorf("backoff(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
}

func TestNormalizePower(t *testing.T) {
	tests := map[string]PowerState{
		"Chassis Power is on\n":  PowerOn,
		"Chassis Power is off\n": PowerOff,
		"On":                     PowerOn,
		"Off":                    PowerOff,
		"PoweringOn":             PowerUnknown,
		"":                       PowerUnknown,
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := normalizePower(in); got != want {
				t.Errorf("normalizePower(%q) = %q, want %q", in, got, want)
			}
		})
	}
}

func TestErrorMessageAndSentinels(t *testing.T) {
	e := &Error{Host: "r12-n07", Driver: DriverIPMI, BMC: "10.1.2.7:623", Op: "power cycle",
		Err: &cause{kind: ErrTimeout, msg: "no answer from the BMC in time"}}
	want := "bmc: host r12-n07 (ipmi 10.1.2.7:623): power cycle: timed out: no answer from the BMC in time"
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
	if !errors.Is(e, ErrTimeout) || errors.Is(e, ErrAuth) {
		t.Errorf("sentinels wrong for %v", e)
	}
}

func TestInvalidTargetsFailWithoutBMC(t *testing.T) {
	m, err := New(Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tg := Target{Host: "h", URL: "ipmi://admin@127.0.0.1:1", Password: "x"}
	bad := Target{Host: "h", URL: "ipmi://admin:pw123@10.0.0.1", Password: "x"}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"bad URL", m.SetPower(t.Context(), bad, ActionOn), ErrInvalidURL},
		{"bad action", m.SetPower(t.Context(), tg, PowerAction("reset")), ErrUnsupported},
		{"bad device", m.SetNextBoot(t.Context(), tg, BootDevice("cdrom"), BootAuto), ErrUnsupported},
		{"bad mode", m.SetNextBoot(t.Context(), tg, BootPXE, BootMode("bios")), ErrUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) {
				t.Errorf("err = %v, want %v", tc.err, tc.want)
			}
			if tc.err != nil && strings.Contains(tc.err.Error(), "pw123") {
				t.Errorf("error leaks the password: %v", tc.err)
			}
		})
	}
}
