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

// Loop is an attached loop device, held open. With autoclear set the kernel
// detaches it at the last close, so mount it before calling Close: the
// mount then keeps it attached until it is unmounted.
type Loop struct {
	// Dev is the device path, /dev/loopN.
	Dev string
	f   *os.File
}

// Close lets go of the device; if nothing else (a mount) holds it, the
// kernel detaches it.
func (l *Loop) Close() error { return l.f.Close() }

// AttachLoop attaches the file at path read-only to a free loop device with
// autoclear set and returns it held open. It uses LOOP_CONFIGURE and falls
// back to LOOP_SET_FD + LOOP_SET_STATUS64 on kernels older than 5.8.
func AttachLoop(path string) (*Loop, error) {
	img, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLoop, err)
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLoop, err)
	}
	defer ctl.Close()

	var last error
	for range 16 { // another process may grab the same free device
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("%w: LOOP_CTL_GET_FREE: %w", ErrLoop, err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		f, err := configureLoop(dev, img)
		if err == nil {
			return &Loop{Dev: dev, f: f}, nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("%w: %s: %w", ErrLoop, dev, err)
		}
		last = err
	}
	return nil, fmt.Errorf("%w: no free device: %w", ErrLoop, last)
}

// configureLoop binds img to dev and returns dev open.
func configureLoop(dev string, img *os.File) (*os.File, error) {
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
		return nil, err
	}
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:], filepath.Base(img.Name()))
	cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Info: info}
	err = unix.IoctlLoopConfigure(int(ld.Fd()), &cfg)
	if err == nil {
		return ld, nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		ld.Close()
		return nil, fmt.Errorf("LOOP_CONFIGURE: %w", err)
	}
	if err := unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_SET_FD, int(img.Fd())); err != nil {
		ld.Close()
		return nil, fmt.Errorf("LOOP_SET_FD: %w", err)
	}
	if err := unix.IoctlLoopSetStatus64(int(ld.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_CLR_FD, 0)
		ld.Close()
		return nil, fmt.Errorf("LOOP_SET_STATUS64: %w", err)
	}
	return ld, nil
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
