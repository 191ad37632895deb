package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigLayers: flags win over KILN_* variables, which win over the
// YAML file; bad values name their source.
func TestConfigLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kilnd.yaml")
	os.WriteFile(file, []byte("data-dir: /from/file\napi-listen: 127.0.0.1:1\nbmc-timeout: 5s\ndhcp-dns: [198.18.0.53]\n"), 0o644)
	t.Setenv("KILN_API_LISTEN", "127.0.0.1:2")
	t.Setenv("KILN_BOOT_TIMEOUT", "7m")
	cfg, err := loadConfig([]string{"--config", file, "--boot-timeout", "9m", "--discovery"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/file" || cfg.APIListen != "127.0.0.1:2" || cfg.BootTimeout != 9*time.Minute ||
		cfg.BMCTimeout != 5*time.Second || !cfg.Discovery || len(cfg.DHCPDNS) != 1 {
		t.Fatalf("%+v", cfg)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad flag duration", []string{"--bmc-timeout", "soon"}, nil, `--bmc-timeout: "soon"`},
		{"bad env bool", nil, map[string]string{"KILN_DISCOVERY": "maybe"}, `KILN_DISCOVERY: "maybe"`},
		{"unknown yaml key", []string{"--config", writeFile(t, "colour: blue\n")}, nil, "colour"},
		{"bad flag bool", []string{"--discovery=perhaps"}, nil, `--discovery: "perhaps"`},
		{"stray argument", []string{"serve"}, nil, `unexpected argument "serve"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if _, err := loadConfig(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "f.yaml")
	os.WriteFile(p, []byte(content), 0o644)
	return p
}
