package firmware

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"strings"
	"testing"
)

// parseSums reads a sha256sum(1) listing into name -> lowercase hex digest.
func parseSums(t *testing.T, data []byte) map[string]string {
	t.Helper()
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SHA256SUMS: malformed line %q", line)
		}
		if _, dup := sums[name]; dup {
			t.Fatalf("SHA256SUMS: %s listed twice", name)
		}
		sums[name] = sum
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sums
}

func TestEmbeddedFilesMatchSHA256SUMS(t *testing.T) {
	fsys := FS()
	raw, err := fs.ReadFile(fsys, "SHA256SUMS")
	if err != nil {
		t.Fatalf("read SHA256SUMS: %v", err)
	}
	sums := parseSums(t, raw)

	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	embedded := map[string]bool{}
	for _, e := range entries {
		if e.Name() == "SHA256SUMS" {
			continue
		}
		embedded[e.Name()] = true
	}
	for _, want := range []string{BIOS, EFIx64, SNPx64} {
		if !embedded[want] {
			t.Errorf("%s is not embedded", want)
		}
	}
	for name := range embedded {
		t.Run(name, func(t *testing.T) {
			want, ok := sums[name]
			if !ok {
				t.Fatalf("%s is embedded but not listed in SHA256SUMS", name)
			}
			data, err := fs.ReadFile(fsys, name)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) == 0 {
				t.Fatalf("%s is empty", name)
			}
			got := sha256.Sum256(data)
			if hex.EncodeToString(got[:]) != want {
				t.Fatalf("%s: sha256 %x, SHA256SUMS says %s", name, got, want)
			}
		})
	}
	for name := range sums {
		if !embedded[name] {
			t.Errorf("SHA256SUMS lists %s, which is not embedded", name)
		}
	}
}

// TestFormats checks that each binary is what its name promises, so a
// refresh that copied the wrong file (or an LFS pointer) fails here.
func TestFormats(t *testing.T) {
	tests := []struct {
		name  string
		check func([]byte) bool
	}{
		// PE/COFF: "MZ", then at e_lfanew "PE\0\0" and machine 0x8664 (x86-64).
		{EFIx64, isPEx64},
		{SNPx64, isPEx64},
		// undionly.kpxe is a PXE NBP: real-mode code, far below 64 KiB of
		// header tricks; check only that it is not PE and has a sane size.
		{BIOS, func(b []byte) bool { return len(b) > 16<<10 && len(b) < 512<<10 && !bytes.HasPrefix(b, []byte("MZ")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := fs.ReadFile(FS(), tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(b) {
				t.Fatalf("%s does not look like the expected binary format", tt.name)
			}
		})
	}
}

func isPEx64(b []byte) bool {
	if len(b) < 0x40 || !bytes.HasPrefix(b, []byte("MZ")) {
		return false
	}
	off := int(b[0x3c]) | int(b[0x3d])<<8 | int(b[0x3e])<<16 | int(b[0x3f])<<24
	if off < 0 || off+6 > len(b) {
		return false
	}
	return bytes.Equal(b[off:off+4], []byte("PE\x00\x00")) && b[off+4] == 0x64 && b[off+5] == 0x86
}

// TestFSHasOnlyNames checks that the files sit at the root, by name only.
func TestFSHasOnlyNames(t *testing.T) {
	for _, name := range []string{BIOS, EFIx64, SNPx64} {
		if _, err := fs.Stat(FS(), name); err != nil {
			t.Errorf("Stat(%q): %v", name, err)
		}
		if _, err := fs.Stat(FS(), "firmware/"+name); err == nil {
			t.Errorf("firmware/%s should not exist in FS()", name)
		}
	}
}
