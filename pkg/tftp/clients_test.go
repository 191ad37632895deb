package tftp

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/immutableinfra/kiln/firmware"
	"github.com/immutableinfra/kiln/pkg/testtool"
)

// TestAtftp fetches every firmware file with the atftp command-line client
// at each blksize (with tsize requested) and checks the content.
func TestAtftp(t *testing.T) {
	atftp := testtool.Need(t, "atftp")
	r := start(t, Config{Root: firmware.FS(), MaxBlockSize: 8192})
	port := strconv.Itoa(r.addr.Port)
	for _, name := range firmwareNames {
		want, _ := fs.ReadFile(firmware.FS(), name)
		for _, blk := range []int{512, 1468, 8192} {
			t.Run(name+"/blksize="+strconv.Itoa(blk), func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				cmd := exec.Command(atftp, "--option", "blksize "+strconv.Itoa(blk), "--option", "tsize 0",
					"--trace", "-g", "-r", name, "-l", out, "127.0.0.1", port)
				trace, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("atftp: %v\n%s", err, trace)
				}
				got, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes, want %d identical bytes", len(got), len(want))
				}
				// atftp --trace prints the OACK it received.
				wantOpt := "blksize: " + strconv.Itoa(blk)
				wantSize := "tsize: " + strconv.Itoa(len(want))
				if !strings.Contains(string(trace), wantOpt) || !strings.Contains(string(trace), wantSize) {
					t.Errorf("OACK in trace lacks %q or %q:\n%.2000s", wantOpt, wantSize, trace)
				}
			})
		}
	}
}

func TestAtftpRefused(t *testing.T) {
	atftp := testtool.Need(t, "atftp")
	r := start(t, Config{Root: firmware.FS()})
	port := strconv.Itoa(r.addr.Port)
	src := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(src, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // in atftp's output
	}{
		{"put", []string{"-p", "-l", src, "-r", "ipxe.efi"}, "read-only"},
		{"missing", []string{"-g", "-r", "nope.efi", "-l", filepath.Join(t.TempDir(), "o")}, "file not found"},
		{"dotdot", []string{"-g", "-r", "../firmware/ipxe.efi", "-l", filepath.Join(t.TempDir(), "o")}, "invalid file name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _ := exec.Command(atftp, append(tt.args, "127.0.0.1", port)...).CombinedOutput()
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("atftp output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}

// TestCurl fetches every firmware file with curl's TFTP client.
func TestCurl(t *testing.T) {
	curl := testtool.Need(t, "curl")
	r := start(t, Config{Root: firmware.FS(), MaxBlockSize: 8192})
	base := "tftp://127.0.0.1:" + strconv.Itoa(r.addr.Port) + "/"
	for _, name := range firmwareNames {
		want, _ := fs.ReadFile(firmware.FS(), name)
		for _, blk := range []int{512, 1468, 8192} {
			t.Run(name+"/blksize="+strconv.Itoa(blk), func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				b, err := exec.Command(curl, "-sS", "--tftp-blksize", strconv.Itoa(blk), "-o", out, base+name).CombinedOutput()
				if err != nil {
					t.Fatalf("curl: %v\n%s", err, b)
				}
				got, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes, want %d identical bytes", len(got), len(want))
				}
			})
		}
	}
}

// TestCurlRefused checks curl's exit codes: 68 is "TFTP file not found",
// 69 "TFTP permission problem".
func TestCurlRefused(t *testing.T) {
	curl := testtool.Need(t, "curl")
	r := start(t, Config{Root: firmware.FS()})
	base := "tftp://127.0.0.1:" + strconv.Itoa(r.addr.Port) + "/"
	src := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(src, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"missing", []string{base + "nope.efi"}, 68},
		{"upload", []string{"-T", src, base + "x.bin"}, 69},
		{"backslash", []string{base + `a\b`}, 69},
		{"case folded", []string{base + "IPXE.EFI"}, 68},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(curl, append([]string{"-sS", "-o", os.DevNull}, tt.args...)...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tt.code {
				t.Fatalf("curl: %v, want exit code %d\n%s", err, tt.code, out)
			}
		})
	}
}
