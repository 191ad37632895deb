package api_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/immutableinfra/kiln/pkg/api"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestGoldenJSON pins the JSON shapes the API returns for a host, an image,
// a history and a rollout status (fixed clock). Regenerate with
// `go test ./pkg/api -run TestGoldenJSON -update` and review the diff.
func TestGoldenJSON(t *testing.T) {
	e := newEnv(t)
	rootfs := makeSquashfs(t, "golden")
	f, err := os.Open(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := e.c.ImportImage(e.ctx, "deb@2026.11.26", "", "console=ttyS0 quiet",
		api.ImportFiles{Rootfs: f, Kernel: strings.NewReader("KERNEL"), Initrd: strings.NewReader("INITRD")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CreateHost(e.ctx, api.HostRequest{Name: "r12-n07", MACs: []string{"52:54:00:12:34:56", "52:54:00:12:34:57"},
		IP: "198.18.12.7/15", Gateway: "198.18.0.1", Labels: map[string]string{"rack": "r12", "role": "web"},
		BMCURL: "ipmi://admin@198.18.100.7", BMCPassword: "golden-secret"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Assign(e.ctx, api.AssignRequest{Hosts: []string{"r12-n07"}, Ref: "deb@latest", Reason: "first boot"}); err != nil {
		t.Fatal(err)
	}
	ro, err := e.c.StartRollout(e.ctx, api.RolloutRequest{Hosts: []string{"r12-n07", "r12-n08"}, Ref: "deb@2026.11.26", Batch: 4, MaxFailures: 1, BootTimeout: "15m", AutoRevert: true})
	if err != nil {
		t.Fatal(err)
	}

	// The rootfs digest depends on the mksquashfs build: check it, then pin a
	// placeholder.
	d := sha256File(t, rootfs)
	fi, err := os.Stat(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	rootfsJSON := fmt.Sprintf("\"rootfs\": {\n    \"digest\": %q,\n    \"size\": %d\n  }", d, fi.Size())

	for _, tc := range []struct{ name, path string }{
		{"host", "/api/v1/hosts/r12-n07"},
		{"image", "/api/v1/images/deb@2026.11.26"},
		{"history", "/api/v1/hosts/r12-n07/history"},
		{"rollout_status", "/api/v1/rollouts/" + ro.ID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.raw("GET", tc.path, "", nil)
			if code != 200 {
				t.Fatalf("%d %s", code, body)
			}
			if tc.name == "image" {
				if !strings.Contains(body, rootfsJSON) {
					t.Fatalf("image JSON lacks %s:\n%s", rootfsJSON, body)
				}
				body = strings.Replace(body, rootfsJSON, "\"rootfs\": {\n    \"digest\": \"ROOTFS-DIGEST\",\n    \"size\": \"ROOTFS-SIZE\"\n  }", 1)
			}
			if strings.Contains(body, "golden-secret") {
				t.Fatal("the BMC password is in the JSON")
			}
			golden := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(want, []byte(body)) {
				t.Fatalf("%s differs from the API's JSON (run with -update and review the diff):\n--- got\n%s\n--- want\n%s", golden, body, want)
			}
		})
	}
}
