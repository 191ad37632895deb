package tftp

import (
	"errors"
	"strings"
	"testing"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = refused with ErrBadName
	}{
		{"ipxe.efi", "ipxe.efi"},
		{"/ipxe.efi", "ipxe.efi"},
		{"pxelinux.cfg/01-52-54-00-12-34-56", "pxelinux.cfg/01-52-54-00-12-34-56"},
		{"/boot/grub/x86_64-efi/core.efi", "boot/grub/x86_64-efi/core.efi"},
		{"UPPER.EFI", "UPPER.EFI"},
		{"ümlaut.bin", "ümlaut.bin"},
		{"with space.bin", "with space.bin"},
		{strings.Repeat("a", 255), strings.Repeat("a", 255)},
		{"", ""},
		{"/", ""},
		{"//", ""},
		{"//ipxe.efi", ""},
		{".", ""},
		{"/.", ""},
		{"./ipxe.efi", ""},
		{"..", ""},
		{"../ipxe.efi", ""},
		{"/../ipxe.efi", ""},
		{"a/../../b", ""},
		{"a/./b", ""},
		{"a//b", ""},
		{"a/", ""},
		{`a\b`, ""},
		{`..\..\windows`, ""},
		{`C:\boot.ini`, ""},
		{"a\x00b", ""},
		{"a\nb", ""},
		{"a\x7fb", ""},
		{"a\u0085b", ""},
		{"\xff\xfe", ""},
		{strings.Repeat("a", 256), ""},
		{"/" + strings.Repeat("a", 255), ""},
	}
	for _, tt := range tests {
		t.Run(quoteName(tt.in), func(t *testing.T) {
			got, err := CleanName(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrBadName) {
					t.Fatalf("CleanName(%q) = %q, %v; want ErrBadName", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("CleanName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}
