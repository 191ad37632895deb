package tftp

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/immutableinfra/kiln/firmware"
)

func TestOverlay(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ipxe.efi"), []byte("operator override"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "extra.bin"), []byte("extra"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	second := fstest.MapFS{"extra.bin": {Data: []byte("shadowed")}, "only2.bin": {Data: []byte("two")}}
	o := Overlay(nil, root.FS(), second, firmware.FS())

	undionly, _ := fs.ReadFile(firmware.FS(), firmware.BIOS)
	tests := []struct {
		name string
		want string
		err  error
	}{
		{"ipxe.efi", "operator override", nil},
		{"extra.bin", "extra", nil},
		{"only2.bin", "two", nil},
		{firmware.BIOS, string(undionly), nil},
		{"missing.bin", "", fs.ErrNotExist},
		{"../etc/passwd", "", fs.ErrInvalid},
		{"/abs", "", fs.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fs.ReadFile(o, tt.name)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ReadFile = %v, want %v", err, tt.err)
				}
				if _, err := fs.Stat(o, tt.name); !errors.Is(err, tt.err) {
					t.Fatalf("Stat = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("ReadFile = %.20q, %v; want %.20q", got, err, tt.want)
			}
			fi, err := fs.Stat(o, tt.name)
			if err != nil || fi.Size() != int64(len(tt.want)) {
				t.Fatalf("Stat = %v, %v; want size %d", fi, err, len(tt.want))
			}
		})
	}
}

// TestOverlayRootRefusesEscape shows why an asset folder should be opened
// with os.OpenRoot: a symlink leading out of it is not followed, and the
// server refuses the file end to end.
func TestOverlayRootRefusesEscape(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "leak.bin")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	o := Overlay(root.FS(), firmware.FS())
	if _, err := fs.ReadFile(o, "leak.bin"); err == nil {
		t.Fatal("symlink out of the root was followed")
	}
	r := start(t, Config{Root: o})
	c := newRaw(t)
	c.send(rq(1, "leak.bin", "octet"), r.addr)
	p, _ := c.recv()
	if _, _, ok := p.errCode(); !ok {
		t.Fatalf("want an ERROR packet, got % x", p)
	}
}
