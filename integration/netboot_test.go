//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
			var phases, timings []string
			on := h.LastPowerOn()
			for _, r := range reps {
				phases = append(phases, r.Phase)
				timings = append(timings, fmt.Sprintf("%s +%.1fs", r.Phase, r.Time.Sub(on).Seconds()))
			}
			t.Logf("%s (%s): power-on to %s", h.Spec.Name, h.Spec.Firmware, strings.Join(timings, ", "))
			if got := strings.Join(phases, ","); got != "network,fetched,verified,mounted,switching,booted" {
				t.Fatalf("phases %s", got)
			}
			if !strings.Contains(h.Console(), "KILN-TESTIMAGE 1 UP") {
				t.Fatalf("console lacks the image's marker")
			}
		})
	}
}

// TestCorruptBlobNeverSwitched corrupts an image's squashfs blob on kilnd's
// disk after import: kiln-init's download no longer matches the digest, so
// the host never switches into it and kilnd holds a failed report that names
// the digest.
func TestCorruptBlobNeverSwitched(t *testing.T) {
	lab := newLab(t, "kiln-it-corrupt")
	img := importImage(t, lab, "testimage@1", testImage(t, "1", false))
	blob := filepath.Join(lab.Kilnd.DataDir, "blobs", "sha256", img.Rootfs.Digest.Hex())
	if err := os.Chmod(blob, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("kiln was here"), img.Rootfs.Size/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	h := netbootHost(t, lab, labkit.HostSpec{Name: "victim", Firmware: labkit.BIOS}, img.Ref)
	r := waitReport(t, lab, "victim", img.Ref, 5*time.Minute)
	if r.Phase != fleet.PhaseFailed || !strings.Contains(r.Message, string(img.Rootfs.Digest)) {
		t.Fatalf("report %+v: want failed naming %s", r, img.Rootfs.Digest)
	}
	if hs := host(t, lab, "victim"); hs.BootedImage != "" {
		t.Fatalf("kilnd records a booted image %s", hs.BootedImage)
	}
	var reps []fleet.BootReport
	kilnJSON(t, lab, &reps, "host", "reports", "victim")
	for _, r := range reps {
		if r.Phase == fleet.PhaseVerified || r.Phase == fleet.PhaseMounted || r.Phase == fleet.PhaseSwitching {
			t.Fatalf("a corrupt image got to %s", r.Phase)
		}
	}
	if strings.Contains(h.Console(), "KILN-TESTIMAGE") {
		t.Fatal("the host switched into the corrupt image")
	}
	t.Logf("failed report: %s", r.Message)
}
