package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/immutableinfra/kiln/integration/labkit"
)

// Console milestones of a netboot, in order. The SeaBIOS/iPXE part prints
// nothing on the serial console, so the first is the kernel's banner.
var bootMilestones = []struct{ metric, marker string }{
	{"power-on to kernel banner", "Linux version"},
	{"power-on to Run /init", "Run /init"},
}

// boot netboots one SeaBIOS+iPXE QEMU host from kilnd (labkit) and from
// dnsmasq (DHCP, iPXE script URL for iPXE clients) + nginx serving the same
// kernel, initrd and command line, in the same namespace with the same QEMU
// command line, alternating, and times power-on to the console milestones.
// kilnd is stopped while the peers serve, and the reverse.
func (r *runner) boot(ctx context.Context) error {
	if err := need("qemu-system-x86_64", "ipmi_sim", "ipmitool", "dnsmasq", "nginx", "curl"); err != nil {
		return err
	}
	image := filepath.Join(r.cfg.Repo, "images", "build", "testimage-1.squashfs")
	if _, err := os.Stat(image); err != nil {
		return fmt.Errorf("%w (run `make images` first)", err)
	}
	name := fmt.Sprintf("kb-boot-%d", r.id)
	r.mu.Lock()
	r.nss[name] = struct{}{} // cleanup deletes it even if labkit does not get to
	r.mu.Unlock()
	dir := filepath.Join(r.work, "boot")
	lab, err := labkit.Start(ctx, labkit.Config{Name: name, Dir: dir, Bin: r.cfg.Bin, KilndArgs: []string{"--log-level", "warn"}})
	if err != nil {
		return err
	}
	defer lab.Close()
	kiln := func(args ...string) (string, error) {
		out, _, err := lab.Kiln(ctx, args...)
		return out, err
	}
	out, err := kiln("image", "import", "testimage@1", "--rootfs", image, "--cmdline", "console=ttyS0", "-o", "json")
	if err != nil {
		return err
	}
	var imp struct {
		Image struct {
			Kernel struct{ Digest string } `json:"kernel"`
			Initrd struct{ Digest string } `json:"initrd"`
		} `json:"image"`
	}
	if err := json.Unmarshal([]byte(out), &imp); err != nil {
		return fmt.Errorf("kiln image import: %w: %.300s", err, out)
	}
	h, err := lab.AddHost(ctx, labkit.HostSpec{Name: "bench1", Firmware: labkit.BIOS})
	if err != nil {
		return err
	}
	mac := h.Spec.MACs[0]
	if _, err := kiln("host", "add", "bench1", "--mac", mac, "--label", "bench=boot"); err != nil {
		return err
	}
	if _, err := kiln("assign", "--selector", "bench=boot", "testimage@1"); err != nil {
		return err
	}
	// The peers boot the same kernel, initrd and command line: kilnd's own
	// script for the host with its blob URLs pointed at nginx.
	script, errOut, err := r.client(ctx, name, 30*time.Second, "curl", "-sSf", lab.Kilnd.URL()+"/boot/"+mac+".ipxe")
	if err != nil {
		return fmt.Errorf("fetch kilnd's script: %w: %s", err, errOut)
	}
	if !strings.Contains(script, strings.TrimPrefix(imp.Image.Kernel.Digest, "sha256:")) {
		return fmt.Errorf("kilnd's script does not load the image's kernel:\n%s", script)
	}
	peerRoot := filepath.Join(dir, "peer-www")
	if err := os.MkdirAll(peerRoot, 0o755); err != nil {
		return err
	}
	peerScript := strings.ReplaceAll(script, lab.Kilnd.URL()+"/blobs/", "http://"+labkit.ServerIP+"/blobs/")
	if err := os.WriteFile(filepath.Join(peerRoot, "boot.ipxe"), []byte(peerScript), 0o644); err != nil {
		return err
	}
	blobDir := filepath.Join(lab.Kilnd.DataDir, "blobs", "sha256")
	startPeers := func() ([]*proc, error) {
		ng, err := r.startNginx(ctx, name, labkit.ServerIP+":80", blobDir, peerRoot)
		if err != nil {
			return nil, err
		}
		lo, hi, _ := strings.Cut(labkit.PoolRange, "-")
		dm, err := r.start(name, "dnsmasq-boot", nil, "dnsmasq", "-d", "--conf-file=/dev/null", "--port=0", "--interface="+labkit.Bridge, "--bind-interfaces",
			"--dhcp-range="+lo+","+hi+",255.254.0.0,1h", "--dhcp-match=set:ipxe,175", "--dhcp-boot=tag:ipxe,http://"+labkit.ServerIP+"/boot.ipxe",
			"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"), "--no-ping", "--dhcp-authoritative", "--user=root", "--group=root",
			"--pid-file="+filepath.Join(dir, "dnsmasq.pid"))
		if err != nil {
			ng.Stop()
			return nil, err
		}
		if err := r.waitListen(ctx, dm, name, "udp", 67, 20*time.Second); err != nil {
			ng.Stop()
			dm.Stop()
			return nil, err
		}
		return []*proc{ng, dm}, nil
	}
	const sec = "boot"
	for _, m := range bootMilestones {
		r.res.Declare(Metric{Section: sec, Name: m.metric, Unit: "s", Peers: []Peer{{Name: "dnsmasq+nginx"}}})
	}
	bootOnce := func(server string) error {
		os.Remove(h.ConsolePath())
		t0 := time.Now()
		if err := h.PowerOn(ctx, true); err != nil {
			return err
		}
		defer h.PowerOff(context.Background())
		got := make([]time.Duration, len(bootMilestones))
		next := 0
		deadline := t0.Add(3 * time.Minute)
		for i := 0; next < len(bootMilestones) && i < 10000; i++ {
			con := h.Console()
			for next < len(bootMilestones) && strings.Contains(con, bootMilestones[next].marker) {
				got[next] = time.Since(t0)
				next++
			}
			if next == len(bootMilestones) {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s: interrupted before %q: %w", server, bootMilestones[next].marker, context.Cause(ctx))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: host did not reach %q within 3m (console tail):\n%s", server, bootMilestones[next].marker, tailString(con, 20))
			}
			time.Sleep(20 * time.Millisecond)
		}
		for i, m := range bootMilestones {
			r.res.Add(sec, m.metric, server, got[i].Seconds())
		}
		r.logf("boot %-13s kernel banner %.1f s, Run /init %.1f s", server, got[0].Seconds(), got[1].Seconds())
		return nil
	}
	for rep := 0; rep < r.cfg.Reps; rep++ {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err := bootOnce(Kiln); err != nil {
			return fmt.Errorf("%w\nkilnd log:\n%s", err, tailString(lab.Kilnd.Log(), 30))
		}
		if err := lab.Kilnd.Stop(); err != nil {
			return err
		}
		peers, err := startPeers()
		if err != nil {
			return err
		}
		err = bootOnce("dnsmasq+nginx")
		for _, p := range peers {
			p.Stop()
		}
		if err != nil {
			return err
		}
		if err := lab.Kilnd.Start(ctx); err != nil {
			return err
		}
	}
	r.res.Note("boot: QEMU -accel tcg, SeaBIOS + the iPXE ROM of virtio-net, testimage@1's kernel and kiln's initrd, same command line; times are power-on (chassis control) to the line appearing on the serial console, polled every 20 ms.")
	return nil
}

func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
