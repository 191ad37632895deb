//go:build integration

package integration

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/integration/labkit"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

// TestDebianImage netboots the real Debian 12 image (images/debian) through
// kilnd and waits for its kiln-booted.service, which reports once
// multi-user.target is reached. Building the image takes minutes, so this
// runs only under `make test-debian`, which builds it and sets
// KILN_DEBIAN_IMAGE.
func TestDebianImage(t *testing.T) {
	path := os.Getenv("KILN_DEBIAN_IMAGE")
	if path == "" {
		t.Skip("KILN_DEBIAN_IMAGE is not set: run `make test-debian`")
	}
	lab := newLab(t, "kiln-it-debian")
	var res struct {
		Image fleet.Image `json:"image"`
	}
	kilnJSON(t, lab, &res, "image", "import", "debian-12@test", "--rootfs", path, "--cmdline", "console=ttyS0,115200n8")
	img := res.Image
	start := time.Now()
	h := netbootHost(t, lab, labkit.HostSpec{Name: "deb1", Firmware: labkit.BIOS, MemoryMB: 2048}, img.Ref)
	r := waitReport(t, lab, "deb1", img.Ref, 15*time.Minute)
	if r.Phase != fleet.PhaseBooted || r.Digest != img.Rootfs.Digest || r.Message != "multi-user reached" {
		t.Fatalf("report %+v", r)
	}
	if !strings.Contains(h.Console(), "Debian GNU/Linux 12") {
		t.Logf("no Debian banner on the console yet (tail):\n%s", tailString(h.Console(), 30))
	}
	t.Logf("Debian 12 (%d MiB squashfs): power-on to multi-user reached in %s", img.Rootfs.Size>>20, time.Since(start).Round(time.Second))
}
