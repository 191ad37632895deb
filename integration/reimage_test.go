//go:build integration

package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/integration/labkit"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

// rack adds n hosts (BIOS and UEFI alternating) behind their BMCs and
// registers them with kiln under label rack=r1.
func rack(t *testing.T, lab *labkit.Lab, n int) []*labkit.Host {
	t.Helper()
	ctx := context.Background()
	pw := filepath.Join(t.TempDir(), "bmc-password")
	os.WriteFile(pw, []byte(labkit.BMCPassword+"\n"), 0o600)
	var hosts []*labkit.Host
	for i := range n {
		fw := labkit.BIOS
		if i%2 == 1 {
			fw = labkit.UEFI
		}
		h, err := lab.AddHost(ctx, labkit.HostSpec{Name: "r1-n" + string(rune('1'+i)), Firmware: fw})
		if err != nil {
			t.Fatal(err)
		}
		kiln(t, lab, "host", "add", h.Spec.Name, "--mac", h.Spec.MACs[0], "--label", "rack=r1", "--bmc", h.BMCURL(), "--bmc-password-file", pw)
		hosts = append(hosts, h)
	}
	return hosts
}

// rollout runs a kiln command that waits for a rollout and returns its
// final status (the JSON printed at the end) and the command's error.
func rollout(t *testing.T, lab *labkit.Lab, args ...string) (rolloutStatus, error) {
	t.Helper()
	out, stderr, err := lab.Kiln(context.Background(), append(args, "-o", "json")...)
	t.Logf("kiln %s:\n%s", strings.Join(args, " "), stderr)
	var st rolloutStatus
	if jerr := jsonUnmarshal(out, &st); jerr != nil {
		t.Fatalf("kiln %v: %v (%v)\n%s", args, jerr, err, out)
	}
	return st, err
}

type rolloutStatus struct {
	Rollout fleet.Rollout       `json:"rollout"`
	Counts  fleet.RolloutCounts `json:"counts"`
	Hosts   []fleet.RolloutHost `json:"hosts"`
}

func onImage(t *testing.T, lab *labkit.Lab, name string, img fleet.Image) {
	t.Helper()
	h := host(t, lab, name)
	if h.DesiredImage != img.Ref || h.BootedImage != img.Ref || h.BootedDigest != img.Rootfs.Digest {
		t.Fatalf("%s: desired %s, booted %s %s; want %s %s", name, h.DesiredImage, h.BootedImage, h.BootedDigest, img.Ref, img.Rootfs.Digest)
	}
}

// TestReimageRack is the operator's day: three hosts behind ipmi_sim BMCs
// reimaged in batches of two from IMAGE@1 to IMAGE@2 through bmclib and
// ipmitool, one host reverted with one command, and a host given a broken
// image auto-reverted.
func TestReimageRack(t *testing.T) {
	lab := newLab(t, "kiln-it-reimage")
	img1 := importImage(t, lab, "testimage@1", testImage(t, "1", false))
	img2 := importImage(t, lab, "testimage@2", testImage(t, "2", false))
	broken := importImage(t, lab, "testimage@3", testImage(t, "3", true))
	hosts := rack(t, lab, 3)

	for _, img := range []fleet.Image{img1, img2} {
		st, err := rollout(t, lab, "reimage", "--selector", "rack=r1", img.Ref, "--batch", "2", "--boot-timeout", "6m", "--wait")
		if err != nil || st.Rollout.State != fleet.RolloutSucceeded || st.Counts.Booted != 3 {
			t.Fatalf("reimage to %s: %v, %+v", img.Ref, err, st.Counts)
		}
		for _, h := range hosts {
			onImage(t, lab, h.Spec.Name, img)
		}
	}
	// Each rollout power-cycled each host once, into a network boot.
	for _, h := range hosts {
		if n := strings.Count(strings.Join(h.PowerEvents(), "\n"), "on pxe"); n != 2 || h.PowerOns() != 2 {
			t.Fatalf("%s power events %v: want exactly 2 network boots", h.Spec.Name, h.PowerEvents())
		}
	}

	// The technician's one command.
	st, err := rollout(t, lab, "revert", "r1-n2", "--reimage", "--boot-timeout", "6m")
	if err != nil || st.Rollout.State != fleet.RolloutSucceeded {
		t.Fatalf("revert --reimage: %v %+v", err, st.Rollout)
	}
	onImage(t, lab, "r1-n2", img1)

	// A broken image: the host fails to boot it and is put back on what it had.
	st, err = rollout(t, lab, "reimage", "r1-n3", broken.Ref, "--auto-revert", "--boot-timeout", "6m", "--wait")
	if err == nil || st.Rollout.State != fleet.RolloutFailed {
		t.Fatalf("rollout of a broken image: err %v state %s", err, st.Rollout.State)
	}
	if len(st.Hosts) != 1 || st.Hosts[0].State != fleet.HostReverted {
		t.Fatalf("host of the broken rollout: %+v", st.Hosts)
	}
	onImage(t, lab, "r1-n3", img2)
	var reps []fleet.BootReport
	kilnJSON(t, lab, &reps, "host", "reports", "r1-n3", "--limit", "50")
	failed := false
	for _, r := range reps {
		if r.Image == broken.Ref && r.Phase == fleet.PhaseFailed && strings.Contains(r.Message, "not found in image") {
			failed = true
		}
	}
	if !failed {
		t.Fatalf("no failed report naming the missing init of %s: %+v", broken.Ref, reps)
	}
	var hist []fleet.HistoryEntry
	kilnJSON(t, lab, &hist, "history", "r1-n3")
	if n := len(hist); n < 4 || hist[n-1].To != img2.Ref || hist[n-2].To != broken.Ref {
		t.Fatalf("history of r1-n3: %+v", hist)
	}
	_ = time.Second
}
