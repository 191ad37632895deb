//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/integration/labkit"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

// TestNetbootTestImage boots a SeaBIOS+iPXE host and an OVMF host (UEFI PXE,
// which chains ipxe.efi over TFTP) from kilnd into the test image: DHCP,
// TFTP, the iPXE script, kernel and initramfs from kilnd's blobs, kiln-init
// fetching and verifying the squashfs, the overlay, switch_root, and the
// image's own booted report carrying the rootfs digest.
func TestNetbootTestImage(t *testing.T) {
	ctx := context.Background()
	lab := newLab(t, "kiln-it-netboot")
	img := importImage(t, lab, "testimage@1", testImage(t, "1", false))
	specs := []labkit.HostSpec{{Name: "bios1", Firmware: labkit.BIOS}, {Name: "uefi1", Firmware: labkit.UEFI}}
	var hosts []*labkit.Host
	for _, s := range specs {
		h, err := lab.AddHost(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
		kiln(t, lab, "host", "add", s.Name, "--mac", h.Spec.MACs[0], "--label", "rack=it")
	}
	kiln(t, lab, "assign", "--selector", "rack=it", "testimage@1")
	for _, h := range hosts {
		if err := h.PowerOn(ctx, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hosts {
		t.Run(h.Spec.Firmware, func(t *testing.T) {
			r := waitReport(t, lab, h.Spec.Name, "testimage@1", 5*time.Minute)
			if r.Phase != fleet.PhaseBooted || r.Digest != img.Rootfs.Digest {
				t.Fatalf("report %+v, want booted with %s", r, img.Rootfs.Digest)
			}
			if !strings.Contains(r.Message, "root=overlay lower=squashfs,ro") {
				t.Fatalf("the image did not find its root as overlay on a read-only squashfs: %q", r.Message)
			}
			hs := host(t, lab, h.Spec.Name)
			if hs.BootedImage != "testimage@1" || hs.BootedDigest != img.Rootfs.Digest {
				t.Fatalf("kilnd records booted %s %s", hs.BootedImage, hs.BootedDigest)
			}
			var reps []fleet.BootReport
			kilnJSON(t, lab, &reps, "host", "reports", h.Spec.Name)
			var phases []string
			for _, r := range reps {
				phases = append(phases, r.Phase)
			}
			if got := strings.Join(phases, ","); got != "network,fetched,verified,mounted,switching,booted" {
				t.Fatalf("phases %s", got)
			}
			if !strings.Contains(h.Console(), "KILN-TESTIMAGE 1 UP") {
				t.Fatalf("console lacks the image's marker")
			}
		})
	}
}
