package bootagent

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	testDigest  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	baseCmdline = "console=ttyS0 quiet kiln.server=http://198.18.0.1:8080 kiln.host=r12-n07 kiln.image=debian-12@2026.11.26 " +
		"kiln.rootfs=http://198.18.0.1:8080/blobs/sha256/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef " +
		"kiln.digest=" + testDigest + " kiln.mac=52:54:00:12:34:56 kiln.token=tok-EN_123="
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		wantErr error
		errHas  string // the key the error must name
		check   func(t *testing.T, c Config)
	}{
		{name: "minimal with defaults", cmdline: baseCmdline, check: func(t *testing.T, c Config) {
			if c.Server.String() != "http://198.18.0.1:8080" || c.Host != "r12-n07" || c.Image != "debian-12@2026.11.26" {
				t.Errorf("got server %q host %q image %q", c.Server.String(), c.Host, c.Image)
			}
			if c.Digest != testDigest || c.MAC.String() != "52:54:00:12:34:56" || c.Token != "tok-EN_123=" {
				t.Errorf("got digest %q mac %q token %q", c.Digest, c.MAC, c.Token)
			}
			if c.RebootDelay != 30*time.Second || c.Init != "/sbin/init" || c.Debug || c.Size != 0 || c.StatePath != "" {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "all optional keys", cmdline: baseCmdline + " kiln.size=4096 kiln.state=/var/lib/state/ kiln.debug kiln.reboot_delay=5s init=/lib/systemd/systemd", check: func(t *testing.T, c Config) {
			if c.Size != 4096 || c.StatePath != "/var/lib/state" || !c.Debug || c.RebootDelay != 5*time.Second || c.Init != "/lib/systemd/systemd" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "quoted value and uppercase MAC, trailing slash", cmdline: strings.Replace(strings.Replace(baseCmdline, "kiln.host=r12-n07", `kiln.host="r12-n07" foo="a b c"`, 1), "52:54:00:12:34:56", "52:54:00:AB:CD:EF", 1) + " kiln.server=http://198.18.0.1:8080/",
			check: func(t *testing.T, c Config) {
				if c.Host != "r12-n07" || c.MAC.String() != "52:54:00:ab:cd:ef" || c.Server.String() != "http://198.18.0.1:8080" {
					t.Errorf("got host %q mac %q server %q", c.Host, c.MAC, c.Server.String())
				}
			}},
		{name: "last key wins and -- is skipped", cmdline: baseCmdline + " -- kiln.host=other", check: func(t *testing.T, c Config) {
			if c.Host != "other" {
				t.Errorf("host = %q", c.Host)
			}
		}},
		{name: "debug=0", cmdline: baseCmdline + " kiln.debug=0", check: func(t *testing.T, c Config) {
			if c.Debug {
				t.Error("debug set")
			}
		}},
		{name: "missing server", cmdline: strings.Replace(baseCmdline, "kiln.server=http://198.18.0.1:8080", "", 1), wantErr: ErrMissingKey, errHas: "kiln.server"},
		{name: "missing token", cmdline: strings.Replace(baseCmdline, "kiln.token=tok-EN_123=", "", 1), wantErr: ErrMissingKey, errHas: "kiln.token"},
		{name: "empty mac", cmdline: strings.Replace(baseCmdline, "kiln.mac=52:54:00:12:34:56", "kiln.mac=", 1), wantErr: ErrMissingKey, errHas: "kiln.mac"},
		{name: "bad server scheme", cmdline: baseCmdline + " kiln.server=ftp://x", wantErr: ErrInvalidKey, errHas: "kiln.server"},
		{name: "relative rootfs", cmdline: baseCmdline + " kiln.rootfs=/blobs/x", wantErr: ErrInvalidKey, errHas: "kiln.rootfs"},
		{name: "uppercase digest", cmdline: baseCmdline + " kiln.digest=" + strings.ToUpper(testDigest), wantErr: ErrInvalidKey, errHas: "kiln.digest"},
		{name: "short digest", cmdline: baseCmdline + " kiln.digest=sha256:abc", wantErr: ErrInvalidKey, errHas: "kiln.digest"},
		{name: "bad mac", cmdline: baseCmdline + " kiln.mac=52:54:00:12:34", wantErr: ErrInvalidKey, errHas: "kiln.mac"},
		{name: "infiniband mac", cmdline: baseCmdline + " kiln.mac=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", wantErr: ErrInvalidKey, errHas: "kiln.mac"},
		{name: "bad duration", cmdline: baseCmdline + " kiln.reboot_delay=soon", wantErr: ErrInvalidKey, errHas: "kiln.reboot_delay"},
		{name: "negative duration", cmdline: baseCmdline + " kiln.reboot_delay=-1s", wantErr: ErrInvalidKey, errHas: "kiln.reboot_delay"},
		{name: "bad size", cmdline: baseCmdline + " kiln.size=12k", wantErr: ErrInvalidKey, errHas: "kiln.size"},
		{name: "image without version", cmdline: baseCmdline + " kiln.image=debian-12", wantErr: ErrInvalidKey, errHas: "kiln.image"},
		{name: "relative init", cmdline: baseCmdline + " init=sbin/init", wantErr: ErrInvalidKey, errHas: "init"},
		{name: "relative state", cmdline: baseCmdline + " kiln.state=state", wantErr: ErrInvalidKey, errHas: "kiln.state"},
		{name: "token with bad characters is not echoed", cmdline: baseCmdline + " kiln.token=se/cr+et", wantErr: ErrInvalidKey, errHas: "kiln.token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCmdline(tt.cmdline)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("error %q does not name %q", err, tt.errHas)
				}
				if strings.Contains(err.Error(), "se/cr+et") {
					t.Errorf("error %q leaks the token", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCmdline: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"plain", "a b=c  d\n", []string{"a", "b=c", "d"}},
		{"quoted value", `k="a b" x`, []string{"k=a b", "x"}},
		{"quoted whole param", `"k=a b" x`, []string{"k=a b", "x"}},
		{"empty quoted value", `k="" x`, []string{"k=", "x"}},
		{"empty", "  \n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SplitCmdline(tt.in)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("SplitCmdline(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
