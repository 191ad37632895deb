package fleet

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSelector(t *testing.T) {
	labels := map[string]string{"rack": "r12", "role": "compute", "gpu": ""}
	tests := []struct {
		sel   string
		match bool
		err   string
	}{
		{"", true, ""},
		{"rack=r12", true, ""},
		{"rack==r12", true, ""},
		{"rack=r13", false, ""},
		{"rack=r12,role=compute", true, ""},
		{"rack=r12,role!=compute", false, ""},
		{"role!=db", true, ""},
		{"gpu", true, ""},
		{"!gpu", false, ""},
		{"!fpga", true, ""},
		{" rack = r12 ", false, "label key"},
		{"rack=a b", false, "may not contain"},
		{"=x", false, "label key"},
	}
	for _, tc := range tests {
		t.Run(tc.sel, func(t *testing.T) {
			sel, err := ParseSelector(tc.sel)
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Matches(labels); got != tc.match {
				t.Fatalf("Matches = %v", got)
			}
			again, err := ParseSelector(sel.String())
			if err != nil || again.String() != sel.String() {
				t.Fatalf("round trip %q -> %q (%v)", sel.String(), again.String(), err)
			}
		})
	}
}

func TestHostValidate(t *testing.T) {
	ok := func() Host {
		return Host{Name: "r1-n1", MACs: []string{"52-54-00-AA-BB-CC"}, Labels: map[string]string{"rack": "r1"},
			IP: netip.MustParsePrefix("198.18.0.10/15"), Gateway: netip.MustParseAddr("198.18.0.1")}
	}
	tests := []struct {
		name  string
		edit  func(*Host)
		field string
	}{
		{"valid", func(*Host) {}, ""},
		{"no mac", func(h *Host) { h.MACs = nil }, "mac"},
		{"bad mac", func(h *Host) { h.MACs = []string{"52:54"} }, "mac"},
		{"twice the same mac", func(h *Host) { h.MACs = append(h.MACs, "52:54:00:aa:bb:cc") }, "given twice"},
		{"bad name", func(h *Host) { h.Name = "-x" }, "host name"},
		{"long name", func(h *Host) { h.Name = strings.Repeat("a", 64) }, "host name"},
		{"ipv6", func(h *Host) { h.IP = netip.MustParsePrefix("2001:db8::1/64"); h.Gateway = netip.Addr{} }, "ip"},
		{"gateway outside", func(h *Host) { h.Gateway = netip.MustParseAddr("10.0.0.1") }, "gateway"},
		{"gateway without ip", func(h *Host) { h.IP = netip.Prefix{} }, "gateway"},
		{"bad label", func(h *Host) { h.Labels = map[string]string{"rack": "a,b"} }, "label"},
		{"bad boot mode", func(h *Host) { h.BootModeOverride = "efi" }, "boot mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := ok()
			tc.edit(&h)
			err := h.Validate()
			if tc.field == "" {
				if err != nil || h.MACs[0] != "52:54:00:aa:bb:cc" {
					t.Fatalf("valid host: %v, macs %v", err, h.MACs)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want ErrInvalid naming %q", err, tc.field)
			}
		})
	}
}

func TestLabelChanges(t *testing.T) {
	in := map[string]string{"rack": "r1", "role": "db"}
	out, err := ApplyLabelChanges(in, []string{"rack=r2", "role-", "zone=a"})
	if err != nil {
		t.Fatal(err)
	}
	if SortedLabels(out) != "rack=r2,zone=a" || SortedLabels(in) != "rack=r1,role=db" {
		t.Fatalf("out %v, in %v", out, in)
	}
	if _, err := ApplyLabelChanges(in, []string{"noequals"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad change: %v", err)
	}
}

func TestRefsAndDigests(t *testing.T) {
	refs := []struct {
		in, want string
		err      bool
	}{
		{"debian-12@2026.11.26", "debian-12@2026.11.26", false},
		{"debian-12", "debian-12@latest", false},
		{"debian-12@latest", "debian-12@latest", false},
		{"Debian@1", "", true},
		{"debian@", "", true},
		{"debian@1 2", "", true},
	}
	for _, tc := range refs {
		r, err := ParseRef(tc.in)
		if (err != nil) != tc.err || err == nil && r.String() != tc.want {
			t.Errorf("ParseRef(%q) = %v, %v", tc.in, r, err)
		}
	}
	good := "sha256:" + strings.Repeat("ab", 32)
	for _, d := range []string{good[:70], strings.ToUpper(good), "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("zz", 32)} {
		if _, err := ParseDigest(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDigest(%q) accepted", d)
		}
	}
	if d, err := ParseDigest(good); err != nil || d.Hex() != strings.Repeat("ab", 32) {
		t.Errorf("ParseDigest(good) = %v %v", d, err)
	}
}

func TestPreviousImage(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e := func(h int, from, to string) HistoryEntry {
		return HistoryEntry{Time: t0.Add(time.Duration(h) * time.Hour), From: from, To: to}
	}
	three := []HistoryEntry{e(0, "", "deb@1"), e(1, "deb@1", "deb@2"), e(2, "deb@2", "deb@3")}
	tests := []struct {
		name    string
		hist    []HistoryEntry
		current string
		want    string
		ok      bool
	}{
		{"after a change", three, "deb@3", "deb@2", true},
		{"after a revert the revert is undone", append(three, e(3, "deb@3", "deb@2")), "deb@2", "deb@3", true},
		{"first assignment only", three[:1], "deb@1", "", false},
		{"no history", nil, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PreviousImage(tc.hist, tc.current)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("PreviousImage = %q %v, want %q %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	refs := ReferencedSince(three, t0.Add(90*time.Minute))
	if !refs["deb@2"] || !refs["deb@3"] || refs["deb@1"] {
		t.Fatalf("ReferencedSince = %v", refs)
	}
}

func TestNextBootMode(t *testing.T) {
	h := Host{BootMode: BootModeBIOS}
	if h.NextBootMode() != BootModeBIOS {
		t.Fatal("observed mode not used")
	}
	h.BootModeOverride = BootModeUEFI
	if h.NextBootMode() != BootModeUEFI {
		t.Fatal("override not used")
	}
}

func TestRolloutJSONBootTimeout(t *testing.T) {
	r := Rollout{ID: "r-1", BootTimeout: 15 * time.Minute, State: RolloutRunning}
	b, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(b), `"boot_timeout":"15m0s"`) {
		t.Fatalf("marshal: %s %v", b, err)
	}
	var back Rollout
	if err := json.Unmarshal(b, &back); err != nil || back.BootTimeout != r.BootTimeout || back.ID != "r-1" || back.State != RolloutRunning {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"id":"r-2","boot_timeout":60000000000}`), &back); err != nil || back.BootTimeout != time.Minute {
		t.Fatalf("nanoseconds: %+v %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"boot_timeout":"soon"}`), &back); err == nil {
		t.Fatal("a bad duration was accepted")
	}
}
