package bootagent

import (
	"os"
	"path/filepath"
	"testing"
)

// extImage returns a fake block device: an ext superblock at 1024 with the
// given label (or none when magic is false).
func extImage(label string, magic bool) []byte {
	b := make([]byte, 4096)
	sb := b[1024:]
	if magic {
		sb[0x38], sb[0x39] = 0x53, 0xEF
	}
	copy(sb[0x78:0x88], label)
	return b
}

func TestFindLabel(t *testing.T) {
	tests := []struct {
		name    string
		devices map[string][]byte
		byLabel string // device the by-label symlink points at, "" = none
		want    string
	}{
		{name: "superblock scan", devices: map[string][]byte{"vda": extImage("root", true), "vdb": extImage("kiln-state", true)}, want: "vdb"},
		{name: "label without ext magic is ignored", devices: map[string][]byte{"vda": extImage("kiln-state", false)}, want: ""},
		{name: "longer label does not match", devices: map[string][]byte{"vda": extImage("kiln-state-old", true)}, want: ""},
		{name: "loop devices are skipped", devices: map[string][]byte{"loop0": extImage("kiln-state", true)}, want: ""},
		{name: "by-label wins", devices: map[string][]byte{"vda": extImage("kiln-state", true), "vdc": extImage("x", true)}, byLabel: "vdc", want: "vdc"},
		{name: "nothing", devices: map[string][]byte{}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dev, sys := filepath.Join(dir, "dev"), filepath.Join(dir, "sys")
			for _, d := range []string{dev, sys, filepath.Join(dev, "disk/by-label")} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for name, data := range tt.devices {
				if err := os.WriteFile(filepath.Join(dev, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(filepath.Join(sys, name), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tt.byLabel != "" {
				if err := os.Symlink("../../"+tt.byLabel, filepath.Join(dev, "disk/by-label", StateLabel)); err != nil {
					t.Fatal(err)
				}
			}
			got := FindLabel(dev, sys, StateLabel)
			want := ""
			if tt.want != "" {
				want = filepath.Join(dev, tt.want)
			}
			if got != want {
				t.Errorf("FindLabel = %q, want %q", got, want)
			}
		})
	}
}
