package fspath

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestRealpath(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) { os.MkdirAll(filepath.Join(root, p), 0o755) }
	ln := func(target, p string) {
		if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	mk("usr/lib/modules/6.1")
	mk("boot")
	os.WriteFile(filepath.Join(root, "boot/vmlinuz-6.1"), []byte("k"), 0o644)
	ln("/usr/lib", "lib")
	ln("boot/vmlinuz-6.1", "vmlinuz")
	ln("../../../../etc", "usr/lib/escape")
	ln("loop2", "loop1")
	ln("loop1", "loop2")
	fsys := os.DirFS(root).(fs.ReadLinkFS)
	tests := []struct {
		name, want string
		err        error
	}{
		{"lib/modules/6.1", "usr/lib/modules/6.1", nil},
		{"vmlinuz", "boot/vmlinuz-6.1", nil},
		{"lib/../lib/modules", "usr/lib/modules", nil}, // ".." applies to where lib leads
		{"usr/lib/escape", "etc", fs.ErrNotExist},
		{".", ".", nil},
		{"loop1", "", ErrLoop},
		{"nope", "", fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Realpath(fsys, tc.name)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %q, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if b, err := ReadFile(fsys, "vmlinuz"); err != nil || string(b) != "k" {
		t.Fatalf("ReadFile: %q %v", b, err)
	}
}
