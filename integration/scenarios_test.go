//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/integration/labkit"
	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/testtool"
)

// startRollout starts a rollout without waiting and returns its ID.
func startRollout(t *testing.T, lab *labkit.Lab, args ...string) string {
	t.Helper()
	var ro fleet.Rollout
	kilnJSON(t, lab, &ro, args...)
	if ro.ID == "" {
		t.Fatalf("kiln %v started no rollout", args)
	}
	return ro.ID
}

func rolloutNow(t *testing.T, lab *labkit.Lab, id string) rolloutStatus {
	t.Helper()
	var st rolloutStatus
	kilnJSON(t, lab, &st, "rollout", "show", id)
	return st
}

// TestCrashMidRollout SIGKILLs kilnd while a rollout has hosts in flight.
// Restarted on the same data dir it finishes the rollout; no host is
// power-cycled twice for one step and no assignment or history is lost.
func TestCrashMidRollout(t *testing.T) {
	lab := newLab(t, "kiln-it-crash")
	img1 := importImage(t, lab, "testimage@1", testImage(t, "1", false))
	img2 := importImage(t, lab, "testimage@2", testImage(t, "2", false))
	hosts := rack(t, lab, 2)
	if st, err := rollout(t, lab, "reimage", "--selector", "rack=r1", img1.Ref, "--batch", "2", "--boot-timeout", "6m", "--wait"); err != nil {
		t.Fatalf("first rollout: %v %+v", err, st.Counts)
	}
	before := map[string]int{}
	for _, h := range hosts {
		before[h.Spec.Name] = h.PowerOns()
	}
	id := startRollout(t, lab, "reimage", "--selector", "rack=r1", img2.Ref, "--batch", "2", "--boot-timeout", "6m")
	// Kill kilnd once every host was power-cycled and none has booted yet.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st := rolloutNow(t, lab, id)
		waiting := 0
		for _, h := range st.Hosts {
			if h.State == fleet.HostWaiting {
				waiting++
			}
		}
		if waiting == len(hosts) {
			break
		}
		if time.Now().After(deadline) || st.Rollout.Over() {
			t.Fatalf("hosts never all in flight: %+v", st.Hosts)
		}
		time.Sleep(300 * time.Millisecond)
	}
	lab.Kilnd.Kill()
	t.Log("kilnd killed with SIGKILL while both hosts boot")
	if err := lab.Kilnd.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := lab.Kiln(context.Background(), "rollout", "watch", id, "-o", "json")
	var st rolloutStatus
	json.Unmarshal([]byte(out), &st)
	if err != nil || st.Rollout.State != fleet.RolloutSucceeded {
		t.Fatalf("rollout after the restart: %v %s %+v", err, stderr, st.Rollout)
	}
	for _, h := range hosts {
		onImage(t, lab, h.Spec.Name, img2)
		if n := h.PowerOns() - before[h.Spec.Name]; n != 1 {
			t.Errorf("%s was powered on %d times for one rollout step: %v", h.Spec.Name, n, h.PowerEvents())
		}
		var hist []fleet.HistoryEntry
		kilnJSON(t, lab, &hist, "history", h.Spec.Name)
		if len(hist) != 2 || hist[0].To != img1.Ref || hist[1].From != img1.Ref || hist[1].To != img2.Ref {
			t.Errorf("%s history after the crash: %+v", h.Spec.Name, hist)
		}
	}
}

// TestDeadBMC stops one host's BMC: that host fails within the BMC timeout
// and the rollout goes on within its failure budget.
func TestDeadBMC(t *testing.T) {
	lab := newLab(t, "kiln-it-deadbmc", "--bmc-timeout", "5s")
	img := importImage(t, lab, "testimage@1", testImage(t, "1", false))
	hosts := rack(t, lab, 2)
	hosts[1].StopBMC()
	start := time.Now()
	st, err := rollout(t, lab, "reimage", "--selector", "rack=r1", img.Ref, "--batch", "2", "--max-failures", "1", "--boot-timeout", "6m", "--wait")
	if err != nil || st.Rollout.State != fleet.RolloutSucceeded || st.Counts.Booted != 1 || st.Counts.Failed != 1 {
		t.Fatalf("rollout with a dead BMC: %v state %s counts %+v", err, st.Rollout.State, st.Counts)
	}
	for _, h := range st.Hosts {
		if h.Host != hosts[1].Spec.Name {
			continue
		}
		if h.State != fleet.HostFailed || !strings.Contains(h.Error, hosts[1].Spec.Name) || !strings.Contains(h.Error, fmt.Sprint(hosts[1].BMCPort)) {
			t.Fatalf("dead-BMC host: %+v (the error must name the host and its BMC)", h)
		}
		if took := h.Finished.Sub(h.Started); took > 3*time.Minute {
			t.Fatalf("dead-BMC host took %s to fail", took)
		}
		if strings.Contains(h.Error, labkit.BMCPassword) {
			t.Fatal("the error shows the BMC password")
		}
	}
	onImage(t, lab, hosts[0].Spec.Name, img)
	t.Logf("rollout with one dead BMC took %s", time.Since(start).Round(time.Second))
}

// TestTwoNICs boots a host from its second NIC: kiln-init brings up the NIC
// whose MAC DHCP saw (the one in the script URL), not the first one.
func TestTwoNICs(t *testing.T) {
	lab := newLab(t, "kiln-it-twonics")
	img := importImage(t, lab, "testimage@1", testImage(t, "1", false))
	h := netbootHost(t, lab, labkit.HostSpec{Name: "dual", Firmware: labkit.BIOS, BootNIC: 1,
		MACs: []string{"52:54:00:4b:10:01", "52:54:00:4b:10:02"}}, img.Ref)
	r := waitReport(t, lab, "dual", img.Ref, 5*time.Minute)
	if r.Phase != fleet.PhaseBooted || r.Digest != img.Rootfs.Digest {
		t.Fatalf("report %+v", r)
	}
	console := h.Console()
	if !strings.Contains(console, "config.mac="+h.Spec.MACs[1]) {
		t.Fatalf("kiln-init was not told the boot NIC %s:\n%s", h.Spec.MACs[1], tailString(console, 30))
	}
	if !strings.Contains(console, "kiln-init: network eth1 ") {
		t.Fatalf("kiln-init did not bring up the second NIC (eth1):\n%s", tailString(console, 30))
	}
}

// TestStatePartition boots a host with a disk holding an ext4 filesystem
// labelled kiln-state, twice. Both times kiln-init mounts it at kilnd's
// --state-mount (default /var/lib/kiln-state) inside the image, and what the
// image wrote there on the first boot is there on the second: the test image
// counts its boots in that filesystem.
func TestStatePartition(t *testing.T) {
	ctx := context.Background()
	mkfs := testtool.Need(t, "mkfs.ext4")
	disk := filepath.Join(t.TempDir(), "state.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-L", "kiln-state", disk).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	lab := newLab(t, "kiln-it-state")
	img := importImage(t, lab, "testimage@1", testImage(t, "1", false))
	h := netbootHost(t, lab, labkit.HostSpec{Name: "stateful", Firmware: labkit.BIOS, Disk: disk}, img.Ref)
	var last uint64
	for boot := 1; boot <= 2; boot++ {
		if boot > 1 {
			if err := h.PowerOff(ctx); err != nil {
				t.Fatal(err)
			}
			if err := h.PowerOn(ctx, true); err != nil {
				t.Fatal(err)
			}
		}
		r := waitReportAfter(t, lab, "stateful", img.Ref, last, 5*time.Minute)
		want := fmt.Sprintf("state=ext4 boots=%d", boot)
		if r.Phase != fleet.PhaseBooted || !strings.HasSuffix(r.Message, want) {
			t.Fatalf("boot %d: report %+v, want booted with %q\n%s", boot, r, want, tailString(h.Console(), 30))
		}
		if c := h.Console(); !strings.Contains(c, "mounted kiln-state at /var/lib/kiln-state") {
			t.Fatalf("boot %d: kiln-init did not say it mounted kiln-state:\n%s", boot, tailString(c, 30))
		}
		last = r.Attempt
	}
}

// TestUEFIHTTPBoot boots an OVMF host through UEFI HTTP boot alone: kilnd
// runs without TFTP, so the firmware's PXE gets no boot file; its HTTP boot
// (vendor class HTTPClient) gets an http:// URL of ipxe.efi, and that iPXE
// then chains the host's script as usual.
func TestUEFIHTTPBoot(t *testing.T) {
	lab := newLab(t, "kiln-it-httpboot", "--tftp", "off")
	img := importImage(t, lab, "testimage@1", testImage(t, "1", false))
	netbootHost(t, lab, labkit.HostSpec{Name: "http1", Firmware: labkit.UEFI}, img.Ref)
	r := waitReport(t, lab, "http1", img.Ref, 8*time.Minute)
	if r.Phase != fleet.PhaseBooted || r.Digest != img.Rootfs.Digest {
		t.Fatalf("report %+v", r)
	}
	metrics := metricsOf(t, lab)
	for _, want := range []string{`kiln_dhcp_decisions_total{kind="http_boot"}`, `kiln_httpboot_requests_total{code="2xx",endpoint="firmware"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, "kiln_tftp_") {
		t.Error("kilnd served TFTP although it was off")
	}
}

// metricsOf returns kilnd's /metrics text.
func metricsOf(t *testing.T, lab *labkit.Lab) string {
	t.Helper()
	out, err := lab.NS.Command(context.Background(), "curl", "-sf", lab.Kilnd.URL()+"/metrics").Output()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return string(out)
}
