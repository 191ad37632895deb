package bootagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// StateLabel is the filesystem label of the optional persistent partition.
const StateLabel = "kiln-state"

// ErrUnsafeRoot is returned by SwitchRoot when "/" is not the initramfs
// (rootfs/tmpfs/ramfs): kiln-init refuses to delete files anywhere else.
var ErrUnsafeRoot = errors.New("refusing to switch_root: / is not an initramfs")

// LinuxSystem is the real machine behind Agent: it implements ModuleLoader,
// Mounter and Switcher with Linux system calls. Network is LinuxNetwork.
// The zero value uses the documented defaults.
type LinuxSystem struct {
	// ModulesDir is the directory with modules.dep; "" means
	// /lib/modules/<uname -r>.
	ModulesDir string
	// Logger gets details; nil discards.
	Logger *slog.Logger
	// Stdio is the terminal Shell attaches to; nil means /dev/console.
	Stdio *os.File
}

func (s *LinuxSystem) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// MountEarly mounts a tmpfs on p.Run first (nothing may be written there
// before), then /proc, /sys and /dev (devtmpfs), and creates p.Kiln. A
// filesystem that is already mounted (EBUSY) is fine.
func (s *LinuxSystem) MountEarly(p Paths) error {
	mounts := []struct{ src, target, fstype, data string }{
		{"tmpfs", p.Run, "tmpfs", "mode=0755"},
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		err := unix.Mount(m.src, m.target, m.fstype, unix.MS_NOSUID, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	if err := os.MkdirAll(p.Kiln, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", p.Kiln, err)
	}
	return nil
}

// LoadModules loads every module listed in modules.dep, dependencies first
// (PlanModules), with finit_module. A module that is already loaded or built
// in (EEXIST) counts as loaded. A tree without modules.dep loads nothing.
func (s *LinuxSystem) LoadModules(ctx context.Context) (int, error) {
	dir := s.ModulesDir
	if dir == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return 0, fmt.Errorf("uname: %w", err)
		}
		dir = filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	}
	order, err := PlanModules(os.DirFS(dir))
	if errors.Is(err, fs.ErrNotExist) {
		s.log().Info("no modules.dep, loading no modules", "dir", dir)
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", dir, err)
	}
	loaded := 0
	for _, m := range order {
		if err := ctx.Err(); err != nil {
			return loaded, err
		}
		err := finitModule(filepath.Join(dir, m))
		switch {
		case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
			// A driver for hardware or a CPU feature this machine lacks
			// (hv_netvsc off Hyper-V, say): harmless, the boot goes on.
			s.log().Warn("module not loaded: no such device", "module", ModuleName(m))
			continue
		case err != nil:
			return loaded, fmt.Errorf("load %s: %w", ModuleName(m), err)
		}
		loaded++
		s.log().Debug("module loaded", "module", ModuleName(m))
	}
	return loaded, nil
}

func finitModule(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(file, ".ko") { // .ko.xz, .ko.zst: the kernel decompresses
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// MountImage attaches p.Rootfs read-only to a loop device, mounts it as
// squashfs at p.Lower (read-only), a tmpfs at p.RW with upper/ and work/,
// and the overlay at p.NewRoot. On error it undoes what it mounted.
func (s *LinuxSystem) MountImage(p Paths) (err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	for _, d := range []string{p.Lower, p.RW, p.NewRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
	}
	loop, err := AttachLoop(p.Rootfs)
	if err != nil {
		return err
	}
	dev := loop.Dev
	// The mount holds the device from here on; closing our handle lets
	// autoclear detach it once unmounted (or now, if the mount failed).
	defer loop.Close()
	if err := unix.Mount(dev, p.Lower, "squashfs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount squashfs %s on %s: %w", dev, p.Lower, err)
	}
	undo = append(undo, func() { _ = unix.Unmount(p.Lower, unix.MNT_DETACH) })
	s.log().Info("squashfs mounted", "dev", dev, "target", p.Lower)

	if err := unix.Mount("tmpfs", p.RW, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", p.RW, err)
	}
	undo = append(undo, func() { _ = unix.Unmount(p.RW, unix.MNT_DETACH) })
	upper, work := filepath.Join(p.RW, "upper"), filepath.Join(p.RW, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", p.Lower, upper, work)
	if err := unix.Mount("overlay", p.NewRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", p.NewRoot, err)
	}
	return nil
}

// UnmountImage undoes MountImage (lazily, MNT_DETACH); the loop device
// detaches itself once the squashfs is unmounted.
func UnmountImage(p Paths) error {
	var errs []error
	for _, m := range []string{p.NewRoot, p.RW, p.Lower} {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// MountState mounts the ext4 filesystem labelled kiln-state at target,
// creating target. It looks in /dev/disk/by-label first and otherwise reads
// the ext2/3/4 superblock label of every block device in /sys/class/block.
func (s *LinuxSystem) MountState(target string) (bool, error) {
	dev := FindLabel("/dev", "/sys/class/block", StateLabel)
	if dev == "" {
		return false, nil
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return true, fmt.Errorf("mkdir %s: %w", target, err)
	}
	for _, fstype := range []string{"ext4", "ext3", "ext2"} {
		err := unix.Mount(dev, target, fstype, unix.MS_NOSUID|unix.MS_NODEV, "")
		if err == nil {
			s.log().Info("kiln-state mounted", "dev", dev, "target", target)
			return true, nil
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
			return true, fmt.Errorf("mount %s on %s: %w", dev, target, err)
		}
	}
	return true, fmt.Errorf("mount %s on %s: not an ext2/3/4 filesystem the kernel supports", dev, target)
}

// FindLabel returns the device node (below devDir) of the filesystem with
// this ext2/3/4 label, or "". It tries devDir/disk/by-label/<label> and then
// the superblock of each device named in sysBlockDir.
func FindLabel(devDir, sysBlockDir, label string) string {
	if p, err := filepath.EvalSymlinks(filepath.Join(devDir, "disk/by-label", label)); err == nil {
		return p
	}
	ents, err := os.ReadDir(sysBlockDir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") {
			continue
		}
		dev := filepath.Join(devDir, name)
		if l, err := readExtLabel(dev); err == nil && l == label {
			return dev
		}
	}
	return ""
}

// readExtLabel returns the volume name of an ext2/3/4 superblock.
func readExtLabel(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return "", err
	}
	return extLabel(sb)
}

// extLabel parses the 1024-byte ext superblock: magic 0xEF53 at 0x38,
// 16-byte volume name at 0x78.
func extLabel(sb []byte) (string, error) {
	if len(sb) < 0x88 || sb[0x38] != 0x53 || sb[0x39] != 0xEF {
		return "", errors.New("no ext superblock")
	}
	name := sb[0x78:0x88]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return string(name), nil
}

// SwitchRoot moves /proc, /sys, /dev and p.Run into p.NewRoot, deletes the
// initramfs's files (without crossing into other mounts), moves p.NewRoot
// onto "/", chroots into it and executes init. It returns only on failure.
// It refuses (ErrUnsafeRoot) unless "/" is a ramfs or tmpfs.
func (s *LinuxSystem) SwitchRoot(p Paths, init string) error {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return fmt.Errorf("statfs /: %w", err)
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return ErrUnsafeRoot
	}
	for _, m := range []string{"/dev", "/proc", "/sys", p.Run} {
		target := filepath.Join(p.NewRoot, m)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", target, err)
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to %s: %w", m, target, err)
		}
	}
	if err := unix.Chdir(p.NewRoot); err != nil {
		return fmt.Errorf("chdir %s: %w", p.NewRoot, err)
	}
	var rootSt unix.Stat_t
	if err := unix.Lstat("/", &rootSt); err != nil {
		return fmt.Errorf("stat /: %w", err)
	}
	if err := removeOnDevice("/", rootSt.Dev); err != nil {
		// Leftovers only cost RAM: note it and go on.
		s.log().Warn("cleaning the initramfs", "err", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", p.NewRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	if err := unix.Exec(init, []string{init}, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", init, err)
	}
	return nil
}

// removeOnDevice deletes the contents of dir that live on device dev,
// leaving mount points (other devices) and dir itself in place.
func removeOnDevice(dir string, dev uint64) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Dev != dev {
			continue // a mount point: not ours to delete
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := removeOnDevice(p, dev); err != nil {
				errs = append(errs, err)
			}
			if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
			}
			continue
		}
		if err := unix.Unlink(p); err != nil {
			errs = append(errs, fmt.Errorf("unlink %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// Reboot syncs and restarts the machine.
func (s *LinuxSystem) Reboot() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	return nil
}

// Shell executes /bin/sh on the console, replacing kiln-init. It returns an
// error wrapping fs.ErrNotExist when there is no /bin/sh.
func (s *LinuxSystem) Shell() error {
	const sh = "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		return fmt.Errorf("%s: %w", sh, err)
	}
	if s.Stdio != nil {
		fd := int(s.Stdio.Fd())
		for _, to := range []int{0, 1, 2} {
			_ = unix.Dup2(fd, to)
		}
	}
	if err := unix.Exec(sh, []string{sh}, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", sh, err)
	}
	return nil
}
