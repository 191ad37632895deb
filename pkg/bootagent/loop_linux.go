package bootagent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLoop is returned (wrapped) when a loop device cannot be set up.
var ErrLoop = errors.New("loop device")

// AttachLoop attaches the file at path read-only to a free loop device and
// returns the device's path (/dev/loopN). The device has autoclear set: it
// detaches itself when the last user (the mount) lets go of it. It uses
// LOOP_CONFIGURE and falls back to LOOP_SET_FD + LOOP_SET_STATUS64 on
// kernels older than 5.8.
func AttachLoop(path string) (string, error) {
	img, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrLoop, err)
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrLoop, err)
	}
	defer ctl.Close()

	var last error
	for range 16 { // another process may grab the same free device
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("%w: LOOP_CTL_GET_FREE: %w", ErrLoop, err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		err = configureLoop(dev, img)
		if err == nil {
			return dev, nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return "", fmt.Errorf("%w: %s: %w", ErrLoop, dev, err)
		}
		last = err
	}
	return "", fmt.Errorf("%w: no free device: %w", ErrLoop, last)
}

func configureLoop(dev string, img *os.File) error {
	// The device node may appear a moment after LOOP_CTL_GET_FREE created it.
	var (
		ld  *os.File
		err error
	)
	for range 50 {
		ld, err = os.OpenFile(dev, os.O_RDONLY, 0)
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer ld.Close()

	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:], filepath.Base(img.Name()))
	cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Info: info}
	err = unix.IoctlLoopConfigure(int(ld.Fd()), &cfg)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("LOOP_CONFIGURE: %w", err)
	}
	if err := unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_SET_FD, int(img.Fd())); err != nil {
		return fmt.Errorf("LOOP_SET_FD: %w", err)
	}
	if err := unix.IoctlLoopSetStatus64(int(ld.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_CLR_FD, 0)
		return fmt.Errorf("LOOP_SET_STATUS64: %w", err)
	}
	return nil
}

// DetachLoop detaches the loop device dev (LOOP_CLR_FD). With autoclear set
// and the device still mounted, the kernel detaches it once unmounted.
func DetachLoop(dev string) error {
	ld, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLoop, err)
	}
	defer ld.Close()
	if err := unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("%w: LOOP_CLR_FD %s: %w", ErrLoop, dev, err)
	}
	return nil
}

// LoopBackingFile returns the file a loop device is attached to, or "" when
// it is detached.
func LoopBackingFile(dev string) string {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// LoopReadOnly reports whether the kernel marks the loop device read-only.
func LoopReadOnly(dev string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "ro"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}
