// Package bootagent is what kiln-init, PID 1 of kiln's netboot initramfs,
// does at boot, written as testable code.
//
// The contract it implements is docs/boot-protocol.md: it parses the kiln.*
// keys of the kernel command line ([ParseCmdline]), loads the kernel modules
// the initramfs carries in dependency order ([PlanModules]), brings up the
// boot NIC with DHCP, downloads the image's squashfs with resume and verifies
// its sha256 ([Fetcher], [VerifyDigest]), mounts it read-only under an
// overlay with a tmpfs upper, writes /run/kiln/boot.json ([BootInfo]),
// reports every phase to kilnd ([Reporter]) and switches into the image's
// init. [Agent] is the phase sequence; it talks to the machine only through
// the small interfaces declared in agent.go, which the Linux implementation
// ([LinuxSystem], in _linux.go files) and the tests' fakes both satisfy.
package bootagent
