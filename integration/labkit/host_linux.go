package labkit

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// Firmware of a virtual host.
const (
	BIOS = "bios" // SeaBIOS with the iPXE option ROM of QEMU's virtio-net
	UEFI = "uefi" // OVMF, its own PXE (TFTP) and HTTP boot
)

// BMC credentials of every lab BMC.
const (
	BMCUser     = "admin"
	BMCPassword = "labsecret"
)

// OVMF firmware files (Debian's ovmf package).
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// HostSpec describes a virtual host.
type HostSpec struct {
	Name     string
	Firmware string   // BIOS or UEFI
	MACs     []string // one NIC each; the first boots unless BootNIC says otherwise
	// BootNIC is the index of the NIC that carries the boot ROM / is first in
	// the boot order (the others have no option ROM).
	BootNIC  int
	MemoryMB int // default 768
	// Disk, when set, is a raw disk image attached as a virtio disk.
	Disk string
	// Index numbers the host in its lab (taps, BMC port); set by AddHost.
	Index int
}

// Host is a QEMU VM behind an ipmi_sim BMC, both inside the lab namespace.
type Host struct {
	Spec    HostSpec
	Dir     string
	BMCPort int
	ns      *Netns
	bmc     *exec.Cmd
}

// BMCURL is the host's BMC as kiln names it.
func (h *Host) BMCURL() string {
	return fmt.Sprintf("ipmi://%s@%s:%d", BMCUser, ServerIP, h.BMCPort)
}

// ConsolePath is the VM's serial console log.
func (h *Host) ConsolePath() string { return filepath.Join(h.Dir, "console.log") }

// Console returns the console log so far.
func (h *Host) Console() string {
	b, _ := os.ReadFile(h.ConsolePath())
	return string(b)
}

// PowerEvents returns the power transitions the chassis program recorded:
// lines "on pxe", "on disk", "off".
func (h *Host) PowerEvents() []string {
	f, err := os.Open(filepath.Join(h.Dir, "power.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if _, ev, ok := strings.Cut(sc.Text(), " "); ok {
			out = append(out, ev)
		}
	}
	return out
}

// LastPowerOn is when the VM was last started (zero if never).
func (h *Host) LastPowerOn() time.Time {
	b, _ := os.ReadFile(filepath.Join(h.Dir, "power.log"))
	var at time.Time
	for _, line := range strings.Split(string(b), "\n") {
		ts, ev, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(ev, "on") {
			continue
		}
		if f, err := strconv.ParseFloat(ts, 64); err == nil {
			at = time.Unix(0, int64(f*1e9))
		}
	}
	return at
}

// PowerOns counts the times the VM was started.
func (h *Host) PowerOns() int {
	n := 0
	for _, e := range h.PowerEvents() {
		if strings.HasPrefix(e, "on") {
			n++
		}
	}
	return n
}

// Running reports whether the VM's QEMU runs.
func (h *Host) Running() bool {
	b, err := os.ReadFile(filepath.Join(h.Dir, "qemu.pid"))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return err == nil && syscall.Kill(pid, 0) == nil
}

// chassis is the ipmi_sim chassis_control program: it records the next boot
// device, starts QEMU on power on (network boot only when the last boot
// device set was pxe, once, as a real BMC's one-time boot override), and
// stops it on power off.
const chassisScript = `#!/bin/sh
# ipmi_sim chassis_control for lab host {{.Name}}: PROG DEVICE get|set ...
dir={{.Dir}}
dev=$1; op=$2; shift 2
log() { echo "$(date +%s.%N) $*" >> "$dir/power.log"; }
running() { [ -f "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; }
stop_vm() {
	running || return 0
	pid=$(cat "$dir/qemu.pid")
	kill "$pid" 2>/dev/null
	for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
	rm -f "$dir/qemu.pid"
	log off
}
start_vm() {
	running && return 0
	boot=$(cat "$dir/bootdev" 2>/dev/null || echo default)
	echo default > "$dir/bootdev"
	if [ "$boot" = pxe ]; then log "on pxe"; else log "on disk"; fi
	"$dir/qemu.sh" "$boot" >> "$dir/qemu.out" 2>&1
}
case $op in
get)
	for what in "$@"; do
		case $what in
		power) if running; then echo "power:1"; else echo "power:0"; fi ;;
		boot) echo "boot:$(cat "$dir/bootdev" 2>/dev/null || echo default)" ;;
		esac
	done ;;
set)
	while [ $# -ge 2 ]; do
		k=$1; v=$2; shift 2
		case $k in
		power) if [ "$v" = 1 ]; then start_vm; else stop_vm; fi ;;
		reset) stop_vm; start_vm ;;
		boot) echo "$v" > "$dir/bootdev"; log "bootdev $v" ;;
		esac
	done ;;
esac
exit 0
`

// qemuScript starts the VM daemonized; $1 is the boot device (pxe or not).
const qemuScript = `#!/bin/sh
dir={{.Dir}}
# A network boot gives the boot NIC its boot ROM and the first boot index;
# any other boot leaves the NICs without (a diskless host then boots nothing).
if [ "$1" = pxe ]; then nics="{{.NICsPXE}}"; else nics="{{.NICsDisk}}"; fi
exec qemu-system-x86_64 -name {{.Name}} -accel tcg -cpu max -m {{.Mem}} -smp 1 \
	-display none -no-user-config -nodefaults -serial file:"$dir/console.log" \
	{{.Machine}} {{.Drive}} $nics -daemonize -pidfile "$dir/qemu.pid"
`

const lanConf = `name "{{.Name}}"
set_working_mc 0x20
  startlan 1
    addr {{.Addr}} {{.Port}}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789ab{{printf "%04x" .Port}}
  endlan
  chassis_control "{{.Dir}}/chassis.sh vm"
  user 2 true "{{.User}}" "{{.Password}}" admin 10 none md2 md5 straight
`

const cmdsEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
`

func writeTemplate(path, text string, mode os.FileMode, data any) error {
	t, err := template.New(filepath.Base(path)).Parse(text)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if err := t.Execute(f, data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (h *Host) tap(i int) string { return fmt.Sprintf("tap%d-%d", h.Spec.Index, i) }

// setup writes the host's scripts and BMC config and creates its taps.
func (h *Host) setup(ctx context.Context) error {
	s := h.Spec
	if s.MemoryMB == 0 {
		s.MemoryMB = 768
	}
	var pxe, disk []string
	for i, mac := range s.MACs {
		if err := h.ns.AddTap(ctx, h.tap(i)); err != nil {
			return err
		}
		nic := fmt.Sprintf("-netdev tap,id=n%d,ifname=%s,script=no,downscript=no -device virtio-net-pci,netdev=n%d,mac=%s", i, h.tap(i), i, mac)
		disk = append(disk, nic+",romfile=")
		switch {
		case i != s.BootNIC:
			pxe = append(pxe, nic+",romfile=")
		case s.Firmware == UEFI:
			// OVMF's own network stack, no iPXE option ROM.
			pxe = append(pxe, nic+",romfile=,bootindex=1")
		default:
			pxe = append(pxe, nic+",bootindex=1")
		}
	}
	machine := ""
	if s.Firmware == UEFI {
		vars := filepath.Join(h.Dir, "OVMF_VARS.fd")
		b, err := os.ReadFile(OVMFVars)
		if err != nil {
			return fmt.Errorf("labkit: %w (install ovmf)", err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			return err
		}
		machine = fmt.Sprintf("-machine q35 -drive if=pflash,format=raw,readonly=on,file=%s -drive if=pflash,format=raw,file=%s", OVMFCode, vars)
	}
	drive := ""
	if s.Disk != "" {
		drive = fmt.Sprintf("-drive file=%s,format=raw,if=virtio", s.Disk)
	}
	data := map[string]any{"Name": s.Name, "Dir": h.Dir, "Mem": s.MemoryMB, "Machine": machine, "Drive": drive, "NICsPXE": strings.Join(pxe, " "), "NICsDisk": strings.Join(disk, " "),
		"Addr": ServerIP, "Port": h.BMCPort, "User": BMCUser, "Password": BMCPassword}
	for _, f := range []struct {
		name, text string
		mode       os.FileMode
	}{{"chassis.sh", chassisScript, 0o755}, {"qemu.sh", qemuScript, 0o755}, {"lan.conf", lanConf, 0o600}, {"cmds.emu", cmdsEmu, 0o644}} {
		if err := writeTemplate(filepath.Join(h.Dir, f.name), f.text, f.mode, data); err != nil {
			return err
		}
	}
	return nil
}

// startBMC runs ipmi_sim for the host inside the namespace.
func (h *Host) startBMC(ctx context.Context) error {
	state := filepath.Join(h.Dir, "bmc-state")
	os.MkdirAll(state, 0o700)
	cmd := h.ns.Command(context.Background(), "ipmi_sim", "-c", filepath.Join(h.Dir, "lan.conf"), "-f", filepath.Join(h.Dir, "cmds.emu"), "-s", state, "-n")
	out, err := os.OpenFile(filepath.Join(h.Dir, "bmc.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("labkit: ipmi_sim for %s: %w", h.Spec.Name, err)
	}
	h.bmc = cmd
	go func() { cmd.Wait(); out.Close() }()
	os.WriteFile(filepath.Join(h.Dir, "bmc.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	return h.waitBMC(ctx)
}

// waitBMC polls the BMC with ipmitool until it answers.
func (h *Host) waitBMC(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := h.ns.Command(ctx, "ipmitool", h.ipmitoolArgs("chassis", "power", "status")...).Run()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("labkit: BMC of %s does not answer on port %d: %v (see %s)", h.Spec.Name, h.BMCPort, err, filepath.Join(h.Dir, "bmc.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *Host) ipmitoolArgs(args ...string) []string {
	return append([]string{"-I", "lanplus", "-C", "3", "-H", ServerIP, "-p", strconv.Itoa(h.BMCPort), "-U", BMCUser, "-P", BMCPassword}, args...)
}

// IPMI runs ipmitool against the host's BMC (as an operator would).
func (h *Host) IPMI(ctx context.Context, args ...string) (string, error) {
	out, err := h.ns.Command(ctx, "ipmitool", h.ipmitoolArgs(args...)...).CombinedOutput()
	return string(out), err
}

// StopBMC kills the host's ipmi_sim (a BMC that stops answering).
func (h *Host) StopBMC() {
	if h.bmc != nil && h.bmc.Process != nil {
		syscall.Kill(-h.bmc.Process.Pid, syscall.SIGKILL)
	}
}

// PowerOn starts the VM directly, without its BMC (pxe: boot from network).
func (h *Host) PowerOn(ctx context.Context, pxe bool) error {
	boot := "default"
	if pxe {
		boot = "pxe"
	}
	return h.chassis(ctx, "set", "boot", boot, "power", "1")
}

// PowerOff stops the VM directly, without its BMC.
func (h *Host) PowerOff(ctx context.Context) error { return h.chassis(ctx, "set", "power", "0") }

func (h *Host) chassis(ctx context.Context, args ...string) error {
	return run(ctx, "ip", append([]string{"netns", "exec", h.ns.Name, filepath.Join(h.Dir, "chassis.sh"), "vm"}, args...)...)
}

// stop kills the VM and the BMC.
func (h *Host) stop() {
	h.StopBMC()
	if b, err := os.ReadFile(filepath.Join(h.Dir, "qemu.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
