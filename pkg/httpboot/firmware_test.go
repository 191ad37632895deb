package httpboot

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/immutableinfra/kiln/firmware"
)

// TestEmbeddedFirmware serves kiln's embedded iPXE binaries and checks each
// download against the SHA256SUMS shipped beside them, and that the EFI
// builds carry the Content-Type UEFI HTTP boot requires.
func TestEmbeddedFirmware(t *testing.T) {
	fw := firmware.FS()
	sums, err := fs.ReadFile(fw, "SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			want[strings.TrimPrefix(f[1], "*")] = f[0]
		}
	}
	h, _ := newTestHandler(t, Config{}, newFakeHosts(nil, nil), dirBlobs{t.TempDir()}, fw)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, tc := range []struct{ name, ctype string }{
		{firmware.BIOS, "application/octet-stream"},
		{firmware.EFIx64, "application/efi"},
		{firmware.SNPx64, "application/efi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, "GET", srv.URL+"/firmware/"+tc.name, "")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tc.ctype {
				t.Errorf("Content-Type %q, want %q", ct, tc.ctype)
			}
			sum := sha256.Sum256([]byte(body))
			if got := hex.EncodeToString(sum[:]); want[tc.name] == "" || got != want[tc.name] {
				t.Errorf("sha256 %s, SHA256SUMS says %q", got, want[tc.name])
			}
		})
	}
}
