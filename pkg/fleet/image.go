package fleet

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Latest is the version alias that resolves to the newest import of a name.
const Latest = "latest"

// ImageRef names an image version: NAME@VERSION. Version may be Latest before
// it is resolved.
type ImageRef struct {
	Name    string
	Version string
}

// ParseRef parses "NAME@VERSION" (or "NAME", which means NAME@latest).
func ParseRef(s string) (ImageRef, error) {
	name, version, found := strings.Cut(s, "@")
	if !found {
		version = Latest
	}
	if err := ValidateName("image name", name); err != nil {
		return ImageRef{}, fmt.Errorf("image ref %q: %w", s, err)
	}
	if version != Latest {
		if err := ValidateVersion(version); err != nil {
			return ImageRef{}, fmt.Errorf("image ref %q: %w", s, err)
		}
	}
	return ImageRef{Name: name, Version: version}, nil
}

// String returns NAME@VERSION.
func (r ImageRef) String() string { return r.Name + "@" + r.Version }

// IsLatest reports whether the ref still has to be resolved.
func (r ImageRef) IsLatest() bool { return r.Version == Latest }

// Digest is a content address, "sha256:" followed by 64 lowercase hex digits.
type Digest string

// ParseDigest validates a digest string.
func ParseDigest(s string) (Digest, error) {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return "", fmt.Errorf("%w: digest %q is not sha256:<64 lowercase hex digits>", ErrInvalid, s)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("%w: digest %q is not sha256:<64 lowercase hex digits>", ErrInvalid, s)
	}
	return Digest(s), nil
}

// DigestFromHex makes a Digest from a 64 hex digit sha256 sum.
func DigestFromHex(h string) (Digest, error) { return ParseDigest("sha256:" + h) }

// Hex returns the hex part of the digest.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), "sha256:") }

// Artifact is one immutable blob of an image.
type Artifact struct {
	Digest Digest `json:"digest"`
	Size   int64  `json:"size"`
}

// IsZero reports whether the artifact is absent.
func (a Artifact) IsZero() bool { return a.Digest == "" }

// Architectures kiln can boot.
const (
	ArchX86_64 = "x86_64"
	ArchARM64  = "arm64"
)

// ValidateArch checks an architecture name.
func ValidateArch(a string) error {
	if a != ArchX86_64 && a != ArchARM64 {
		return fmt.Errorf("%w: arch %q (want %s or %s)", ErrInvalid, a, ArchX86_64, ArchARM64)
	}
	return nil
}

// Image is the manifest of one immutable image version.
type Image struct {
	Ref     string    `json:"ref"`
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Arch    string    `json:"arch"`
	Rootfs  Artifact  `json:"rootfs"`
	Kernel  Artifact  `json:"kernel"`
	Initrd  Artifact  `json:"initrd"`
	Cmdline string    `json:"cmdline"`
	Created time.Time `json:"created"`
	// KernelPath is where the kernel was found inside the rootfs; empty when
	// it was given at import.
	KernelPath string `json:"kernel_path,omitempty"`
	// KernelVersion is the version of the kernel and its modules, when known.
	KernelVersion string `json:"kernel_version,omitempty"`
	// InitrdBuilt is true when kilnd built the initramfs (kiln-init plus the
	// image's modules) rather than taking one at import.
	InitrdBuilt bool `json:"initrd_built"`
}

// Digests returns the image's blob digests (rootfs, kernel, initrd).
func (im Image) Digests() []Digest {
	var ds []Digest
	for _, a := range []Artifact{im.Rootfs, im.Kernel, im.Initrd} {
		if !a.IsZero() {
			ds = append(ds, a.Digest)
		}
	}
	return ds
}

// SameContent reports whether two manifests describe the same image content:
// a re-import that is SameContent is a no-op, anything else is a conflict.
func (im Image) SameContent(o Image) bool {
	return im.Name == o.Name && im.Version == o.Version && im.Arch == o.Arch &&
		im.Rootfs == o.Rootfs && im.Kernel == o.Kernel && im.Cmdline == o.Cmdline &&
		(im.InitrdBuilt && o.InitrdBuilt || im.Initrd == o.Initrd)
}
