// Package firmware embeds the iPXE binaries that kiln hands to PXE clients
// over TFTP and HTTP. The files are copied verbatim from Debian's ipxe package
// by refresh.sh; SHA256SUMS records their digests and README.md their
// provenance and licence.
package firmware

import (
	"embed"
	"io/fs"
)

// Names of the embedded binaries, by the client they are meant for.
const (
	// BIOS is the iPXE build chainloaded by legacy BIOS PXE ROMs (UNDI).
	BIOS = "undionly.kpxe"
	// EFIx64 is the full x86-64 UEFI iPXE build with its own NIC drivers.
	EFIx64 = "ipxe.efi"
	// SNPx64 is the x86-64 UEFI iPXE build that drives the NIC only through
	// the firmware's Simple Network Protocol.
	SNPx64 = "snponly.efi"
)

//go:embed undionly.kpxe ipxe.efi snponly.efi SHA256SUMS
var files embed.FS

// FS returns the embedded firmware files at the root of a read-only file
// system, by their names only (BIOS, EFIx64, SNPx64 and SHA256SUMS). The
// result is safe for concurrent use and may be shared; every call returns an
// equivalent value.
func FS() fs.FS { return files }
