package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestKeyFileAndSealing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.key")
	box, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	sealed, err := box.Seal("r1-n1", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("sealed value contains the plaintext")
	}
	again, err := LoadOrCreateKey(path) // the same key is read back
	if err != nil {
		t.Fatal(err)
	}
	tamper := append([]byte(nil), sealed...)
	tamper[len(tamper)-1] ^= 1
	tests := []struct {
		name   string
		label  string
		sealed []byte
		want   error
	}{
		{"right label", "r1-n1", sealed, nil},
		{"other host", "r1-n2", sealed, ErrOpen},
		{"tampered", "r1-n1", tamper, ErrOpen},
		{"short", "r1-n1", sealed[:5], ErrOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := again.Open(tc.label, tc.sealed)
			if !errors.Is(err, tc.want) || tc.want == nil && string(pt) != "hunter2" {
				t.Fatalf("got %q, %v; want %v", pt, err, tc.want)
			}
		})
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateKey(path); !errors.Is(err, ErrBadKey) {
		t.Fatalf("world-readable key accepted: %v", err)
	}
}
