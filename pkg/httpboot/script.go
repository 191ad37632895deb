package httpboot

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// ErrUnsafeScript is wrapped when a value would change the meaning of the
// iPXE script it is written into (a newline, "${", a "||" token...). Such a
// script is never rendered.
var ErrUnsafeScript = errors.New("value unsafe for an iPXE script")

// Script kinds, the values of the scripts metric's kind label.
const (
	kindBoot    = "boot"
	kindExit    = "exit"
	kindUnknown = "unknown"
)

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,256}$`)

// safeValue reports whether s can be one kernel parameter value and one iPXE
// token: printable ASCII without spaces, quotes or "${".
func safeValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' {
			return false
		}
	}
	return !strings.Contains(s, "${")
}

// checkCmdline refuses a command line that iPXE would not pass through
// verbatim: iPXE splits a script line on white space, runs "${...}" setting
// expansion on every token, ends the command at a token "||", "&&" or ";",
// and treats a token starting with '#' as a comment. Control characters
// (newlines above all) would end the script line.
func checkCmdline(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return fmt.Errorf("%w: control character %q at %d", ErrUnsafeScript, c, i)
		}
	}
	if strings.Contains(s, "${") {
		return fmt.Errorf("%w: \"${\" would be expanded by iPXE", ErrUnsafeScript)
	}
	for _, tok := range strings.Fields(s) {
		switch {
		case tok == "||" || tok == "&&" || tok == ";":
			return fmt.Errorf("%w: %q would end the iPXE command", ErrUnsafeScript, tok)
		case strings.HasPrefix(tok, "#"):
			return fmt.Errorf("%w: %q would start an iPXE comment", ErrUnsafeScript, tok)
		}
	}
	return nil
}

// bootParams is everything a boot script is rendered from.
type bootParams struct {
	server string // base URL, no trailing slash
	host   string
	mac    string
	ref    string
	img    fleet.Image
	token  string
}

// imageRef returns the resolved NAME@VERSION of img.
func imageRef(img fleet.Image) (string, error) {
	ref := img.Ref
	if img.Name != "" && img.Version != "" {
		ref = img.Name + "@" + img.Version
	}
	r, err := fleet.ParseRef(ref)
	if err != nil {
		return "", err
	}
	if r.IsLatest() {
		return "", fmt.Errorf("%w: image ref %q is not resolved", fleet.ErrInvalid, ref)
	}
	return r.String(), nil
}

// checkImage verifies that img can be booted and that its cmdline is safe,
// before a boot attempt is issued for it.
func (s *settings) checkImage(img fleet.Image) (ref string, err error) {
	if ref, err = imageRef(img); err != nil {
		return "", err
	}
	for _, a := range []struct {
		what string
		art  fleet.Artifact
	}{{"rootfs", img.Rootfs}, {"kernel", img.Kernel}, {"initrd", img.Initrd}} {
		if _, err := fleet.ParseDigest(string(a.art.Digest)); err != nil {
			return "", fmt.Errorf("image %s: %s: %w", ref, a.what, err)
		}
	}
	if err := checkCmdline(img.Cmdline); err != nil {
		return "", fmt.Errorf("image %s: cmdline: %w", ref, err)
	}
	return ref, nil
}

// cmdline returns the kernel command line of a boot: the image's cmdline,
// the configured extra, kiln's keys (docs/boot-protocol.md §1) and
// initrd=initrd, which the EFI stub needs to find the initrd iPXE names so.
func (s *settings) cmdline(p bootParams) (string, error) {
	var parts []string
	if c := strings.Join(strings.Fields(p.img.Cmdline), " "); c != "" {
		parts = append(parts, c)
	}
	if s.extra != "" {
		parts = append(parts, s.extra)
	}
	kv := []struct{ k, v string }{
		{"kiln.server", p.server},
		{"kiln.host", p.host},
		{"kiln.image", p.ref},
		{"kiln.rootfs", blobURL(p.server, p.img.Rootfs.Digest)},
		{"kiln.digest", string(p.img.Rootfs.Digest)},
	}
	if p.img.Rootfs.Size > 0 {
		kv = append(kv, struct{ k, v string }{"kiln.size", strconv.FormatInt(p.img.Rootfs.Size, 10)})
	}
	kv = append(kv, struct{ k, v string }{"kiln.mac", p.mac}, struct{ k, v string }{"kiln.token", p.token})
	if s.state != "" {
		kv = append(kv, struct{ k, v string }{"kiln.state", s.state})
	}
	if s.reboot > 0 {
		kv = append(kv, struct{ k, v string }{"kiln.reboot_delay", s.reboot.String()})
	}
	for _, e := range kv {
		if !safeValue(e.v) {
			// The token is a secret: name the key only.
			return "", fmt.Errorf("%w: %s has an empty or unsafe value", ErrUnsafeScript, e.k)
		}
		parts = append(parts, e.k+"="+e.v)
	}
	if s.debug {
		parts = append(parts, "kiln.debug")
	}
	parts = append(parts, "initrd=initrd")
	line := strings.Join(parts, " ")
	if len(line) > MaxCmdline {
		return "", fmt.Errorf("%w: kernel command line is %d bytes, more than %d", ErrUnsafeScript, len(line), MaxCmdline)
	}
	return line, nil
}

func blobURL(server string, d fleet.Digest) string {
	return server + "/blobs/sha256/" + d.Hex()
}

// retried writes cmd, then Retries more copies of it joined by "||", then
// "|| goto failed": iPXE runs each copy only when the one before failed.
// Unrolled, because the 2019 iPXE in Debian's and QEMU's ROMs is the oldest
// client to support and loops with counters are fragile there.
func (s *settings) retried(b *strings.Builder, cmd string) {
	for i := 0; i <= s.retries; i++ {
		b.WriteString(cmd)
		b.WriteString(" || ")
	}
	b.WriteString("goto failed\n")
}

// bootScript renders the script that boots p.
func (s *settings) bootScript(p bootParams) (string, error) {
	cmd, err := s.cmdline(p)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "echo kiln: booting %s (%s) into %s\n", p.host, p.mac, p.ref)
	s.retried(&b, "kernel --name vmlinuz "+blobURL(p.server, p.img.Kernel.Digest)+" "+cmd)
	s.retried(&b, "initrd --name initrd "+blobURL(p.server, p.img.Initrd.Digest))
	b.WriteString("boot || goto failed\n")
	b.WriteString(":failed\n")
	fmt.Fprintf(&b, "echo kiln: booting %s failed, trying the next boot device in %d s\n", p.ref, int(FailDelay.Seconds()))
	fmt.Fprintf(&b, "sleep %d\n", int(FailDelay.Seconds()))
	b.WriteString("exit 1\n")
	return b.String(), nil
}

// exitScript renders a script that prints why and exits with a failure
// status, so that iPXE returns to the firmware, which tries its next boot
// device. (A zero status would make UEFI boot managers stop at their menu.)
// why must be made of safe words (names, MACs validated before).
func exitScript(why string) string {
	return "#!ipxe\necho kiln: " + why + ", trying the next boot device\nexit 1\n"
}
