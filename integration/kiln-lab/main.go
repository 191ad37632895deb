// Command kiln-lab runs `make lab`: a virtual rack on this machine — a
// private network namespace, kilnd serving it, and LAB_HOSTS QEMU hosts
// (SeaBIOS and OVMF alternating) each behind its own ipmi_sim BMC — then
// shows kiln reimaging the rack twice and reverting one host. The lab keeps
// running; `kiln-lab down` (make lab-down) removes all of it.
//
//	kiln-lab up   -bin DIR -dir DIR -hosts N -image1 FILE -image2 FILE
//	kiln-lab down -dir DIR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/immutableinfra/kiln/integration/labkit"
)

const (
	netns       = "kiln-lab"
	forwardAddr = "127.0.0.1:18080"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kiln-lab up|down [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("kiln-lab", flag.ExitOnError)
	bin := fs.String("bin", "bin", "folder with kilnd, kiln and kiln-init")
	dir := fs.String("dir", "lab", "folder for everything the lab writes")
	hosts := fs.Int("hosts", 3, "virtual hosts")
	img1 := fs.String("image1", "images/build/testimage-1.squashfs", "first image version")
	img2 := fs.String("image2", "images/build/testimage-2.squashfs", "second image version")
	fs.Parse(os.Args[2:])
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "kiln-lab: needs root (network namespaces, taps, QEMU)")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, *bin, *dir, *hosts, *img1, *img2)
	case "down":
		err = down(*dir)
	default:
		err = fmt.Errorf("unknown command %q (up or down)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiln-lab:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...) }

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func up(ctx context.Context, bin, dir string, n int, img1, img2 string) error {
	bin, dir = abs(bin), abs(dir)
	if n < 1 || n > 32 {
		return fmt.Errorf("LAB_HOSTS=%d: want 1 to 32", n)
	}
	if labkit.NetnsExists(netns) {
		say("a lab is already running: replacing it")
		if err := down(dir); err != nil {
			return err
		}
	}
	// The forwarder needs its port; a port someone else holds would leave
	// the printed KILN_SERVER pointing at them.
	ln, err := net.Listen("tcp", forwardAddr)
	if err != nil {
		return fmt.Errorf("%s, where the lab makes kilnd's API reachable, is in use by another process (ss -ltnp 'sport = :%s' shows which): %w",
			forwardAddr, strings.Split(forwardAddr, ":")[1], err)
	}
	ln.Close()
	say("starting kilnd in network namespace %s (bridge %s, %s)", netns, labkit.Bridge, labkit.BridgeCIDR)
	lab, err := labkit.Start(ctx, labkit.Config{Name: netns, Dir: dir, Bin: bin})
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			fmt.Fprintln(os.Stderr, "kiln-lab: failed; removing the lab (its logs stay in", dir+")")
			stopForwarder(dir)
			lab.Close()
		}
	}()
	if err := forward(ctx, dir, lab); err != nil {
		return err
	}
	kiln := func(args ...string) error {
		fmt.Printf("$ kiln %s\n", strings.Join(args, " "))
		cmd := lab.NS.Command(ctx, filepath.Join(bin, "kiln"), args...)
		cmd.Env = append(os.Environ(), "KILN_SERVER="+lab.Kilnd.URL(), "KILN_DATA_DIR="+lab.Kilnd.DataDir, "KILN_TOKEN=")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		return cmd.Run()
	}
	pw := filepath.Join(dir, "bmc-password")
	if err := os.WriteFile(pw, []byte(labkit.BMCPassword+"\n"), 0o600); err != nil {
		return err
	}
	say("creating %d hosts, each a QEMU VM behind its own ipmi_sim BMC", n)
	for i := range n {
		fw := labkit.BIOS
		if i%2 == 1 {
			fw = labkit.UEFI
		}
		h, err := lab.AddHost(ctx, labkit.HostSpec{Name: fmt.Sprintf("lab-%d", i+1), Firmware: fw})
		if err != nil {
			return err
		}
		if err := kiln("host", "add", h.Spec.Name, "--mac", h.Spec.MACs[0], "--label", "rack=lab", "--label", "firmware="+fw,
			"--bmc", h.BMCURL(), "--bmc-password-file", pw); err != nil {
			return err
		}
	}
	say("importing two versions of the test image")
	for i, img := range []string{img1, img2} {
		if err := kiln("image", "import", fmt.Sprintf("testimage@%d", i+1), "--rootfs", img, "--cmdline", "console=ttyS0"); err != nil {
			return err
		}
	}
	batch := strconv.Itoa(n)
	steps := []struct {
		title string
		args  []string
	}{
		{"reimaging the rack onto testimage@1 (power-cycle through each BMC, wait for booted)", []string{"reimage", "--selector", "rack=lab", "testimage@1", "--batch", batch, "--boot-timeout", "10m", "--wait"}},
		{"reimaging the rack onto testimage@2", []string{"reimage", "--selector", "rack=lab", "testimage@2", "--batch", batch, "--boot-timeout", "10m", "--wait"}},
		{"a technician reverts lab-1 to what it ran before", []string{"revert", "lab-1", "--reimage", "--boot-timeout", "10m"}},
		{"the rack now", []string{"host", "list"}},
		{"lab-1's history", []string{"history", "lab-1"}},
	}
	for _, s := range steps {
		say("%s", s.title)
		if err := kiln(s.args...); err != nil {
			return fmt.Errorf("%s: %w", s.title, err)
		}
	}
	token, err := os.ReadFile(filepath.Join(lab.Kilnd.DataDir, "admin.token"))
	if err != nil {
		return err
	}
	ok = true
	say("the lab is running. Use kiln against it from any shell of this machine:")
	fmt.Printf("\nexport KILN_SERVER=http://%s\nexport KILN_TOKEN=%s\n\n", forwardAddr, strings.TrimSpace(string(token)))
	fmt.Printf("  %s/kiln host list\n", bin)
	fmt.Printf("  %s/kiln reimage lab-2 testimage@1 --wait\n", bin)
	fmt.Printf("  %s/kiln host power lab-3 status\n", bin)
	fmt.Printf("  tail -f %s/hosts/lab-1/console.log     # a host's serial console\n", dir)
	fmt.Printf("  tail -f %s/kilnd.log                   # kilnd's log\n\n", dir)
	fmt.Printf("Remove everything the lab made: make lab-down\n")
	return nil
}

// forward makes kilnd's API reachable from the machine's own loopback: a
// socat in the root namespace that runs, per connection, a socat inside the
// lab namespace. No interface or route joins the two namespaces.
func forward(ctx context.Context, dir string, lab *labkit.Lab) error {
	// socat's EXEC address cannot hold the colons of the inner address:
	// the inner socat is started through a script.
	script := filepath.Join(dir, "forward.sh")
	body := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s socat STDIO TCP:%s:%d\n", netns, labkit.ServerIP, labkit.APIPort)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		return err
	}
	cmd := exec.Command("socat", "TCP-LISTEN:"+strings.Split(forwardAddr, ":")[1]+",bind=127.0.0.1,fork,reuseaddr", "EXEC:"+script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	logf, err := os.Create(filepath.Join(dir, "forward.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("socat: %w", err)
	}
	os.WriteFile(filepath.Join(dir, "forward.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	cmd.Process.Release()
	// Ask for the lab's own hosts with its token: only this lab's kilnd
	// answers that with 200.
	token, err := os.ReadFile(filepath.Join(lab.Kilnd.DataDir, "admin.token"))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if exec.CommandContext(ctx, "curl", "-sf", "-o", "/dev/null", "--max-time", "2", "-H", "Authorization: Bearer "+strings.TrimSpace(string(token)),
			"http://"+forwardAddr+"/api/v1/hosts").Run() == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the API forwarder on " + forwardAddr + " does not answer (is the port taken?)")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopForwarder stops the API forwarder recorded under dir, if any.
func stopForwarder(dir string) {
	if b, err := os.ReadFile(filepath.Join(dir, "forward.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			syscall.Kill(-pid, syscall.SIGTERM) // its own session: the forks go too
		}
	}
}

// down removes every process, namespace and file a lab made.
func down(dir string) error {
	dir = abs(dir)
	stopForwarder(dir)
	if err := labkit.Down(netns); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	fmt.Println("kiln-lab: lab removed")
	return nil
}
