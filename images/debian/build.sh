#!/bin/bash
# debian/build.sh OUT VERSION — build a Debian 12 (bookworm) kiln image.
#
# debootstrap --variant=minbase, then systemd-sysv, the cloud kernel,
# openssh-server, iproute2, systemd-networkd with DHCP on every en* NIC, a
# serial getty on ttyS0, kiln-booted.service (reports "booted" to kilnd
# through /run/kiln/bin/kiln-init once multi-user.target is reached), an
# empty machine-id, a locked root password, SSH host keys generated at each
# boot (never baked into the image), and /etc/kiln-release = VERSION.
# Output: OUT (squashfs, zstd). The staging tree is OUT minus .squashfs
# plus ".rootfs" and is rebuilt from scratch every run.
#
# Environment:
#   MIRROR    Debian mirror URL (default: the first URIs:/deb line for
#             bookworm in /etc/apt/sources.list*)
#   SECURITY  security mirror URL (default: same discovery for
#             bookworm-security; empty string = none)
#   SSH_KEYS  file with authorized_keys lines for root (optional)
#   LEVEL     zstd level for mksquashfs (default 15, mksquashfs's default)
#   EXTRA_PACKAGES  more packages to install (space separated)
# Must run as root.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 OUT.squashfs VERSION" >&2; exit 2; }
out=$1 version=$2
case $version in *[!A-Za-z0-9._+-]*|"") echo "$0: VERSION must match [A-Za-z0-9._+-]+" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "$0: must run as root" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
start=$(date +%s)
log() { echo "debian: $*" >&2; }

# discover SUITE: print the first mirror URL configured for SUITE.
discover() {
	local suite=$1
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v s="$suite" '$1 == "deb" && $3 == s { print $2; exit }' | grep . && return
	# deb822 .sources stanzas
	awk -v s="$suite" '
		/^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
		$1 == "URIs:" { uri = $2 }
		$1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == s) hit = 1 }
		END { if (uri != "" && hit) print uri }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1
}
mirror=${MIRROR:-$(discover bookworm)}
security=${SECURITY-$(discover bookworm-security)}
[ -n "$mirror" ] || { log "no bookworm mirror in /etc/apt/sources.list*; set MIRROR"; exit 1; }
log "mirror $mirror${security:+, security $security}"

mkdir -p "$(dirname "$out")"
# See kernel.sh: keep image trees out of the kiln module's ./... patterns.
[ -e "$(dirname "$out")/go.mod" ] || echo "module kiln-images-build" >"$(dirname "$out")/go.mod"
root=${out%.squashfs}.rootfs

cleanup() {
	for m in dev/pts dev proc sys run; do
		mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m" || true
	done
}
trap cleanup EXIT
cleanup
rm -rf "$root"

log "debootstrap (minbase)"
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >&2

# Sources inside the image: the same mirror, plus updates and security.
{
	echo "deb $mirror bookworm main"
	echo "deb $mirror bookworm-updates main"
	[ -z "$security" ] || echo "deb $security bookworm-security main"
} >"$root/etc/apt/sources.list"

mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount -t tmpfs tmpfs "$root/run"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
log "installing packages"
in_root apt-get update -q >&2
in_root apt-get install -y -q --no-install-recommends \
	systemd-sysv udev dbus linux-image-cloud-amd64 openssh-server iproute2 \
	systemd-resolved iputils-ping less procps ${EXTRA_PACKAGES:-} >&2

log "configuring"
# Network: DHCP on every en* NIC with systemd-networkd.
install -D -m 0644 /dev/stdin "$root/etc/systemd/network/20-kiln-dhcp.network" <<'NET'
[Match]
Name=en*

[Network]
DHCP=yes
# kiln-init already configured the boot NIC with the same lease.
KeepConfiguration=yes

[DHCPv4]
UseDomains=yes
NET
in_root systemctl enable systemd-networkd.service systemd-resolved.service >&2
in_root systemctl enable serial-getty@ttyS0.service >&2

# kiln-booted.service: the image reports "booted" itself.
install -m 0644 "$here/kiln-booted.service" "$root/etc/systemd/system/kiln-booted.service"
in_root systemctl enable kiln-booted.service >&2

# SSH: host keys are generated at boot, so no two hosts share them.
rm -f "$root"/etc/ssh/ssh_host_*
install -D -m 0644 /dev/stdin "$root/etc/systemd/system/ssh.service.d/kiln-hostkeys.conf" <<'SSH'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
SSH
install -d -m 0700 "$root/root/.ssh"
if [ -n "${SSH_KEYS:-}" ]; then
	install -m 0600 "$SSH_KEYS" "$root/root/.ssh/authorized_keys"
	log "root authorized_keys from $SSH_KEYS"
fi

# Identity: locked root password, empty machine-id (systemd makes one per
# boot), a neutral hostname, the kiln release.
in_root passwd -l root >&2
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo localhost >"$root/etc/hostname"
: >"$root/etc/fstab"
echo "$version" >"$root/etc/kiln-release"
# The image's own kernel command line, for whoever builds the iPXE script.
install -D -m 0644 /dev/stdin "$root/etc/kiln/cmdline" <<'CMD'
console=tty0 console=ttyS0,115200n8
CMD

log "cleaning"
in_root apt-get clean >&2
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log \
	"$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/* \
	"$root"/boot/initrd.img* # kilnd builds the netboot initramfs itself
cleanup
trap - EXIT

kver=$(ls "$root/lib/modules" | head -n1)
[ -e "$root/boot/vmlinuz-$kver" ] || { log "no kernel installed"; exit 1; }
[ -s "$root/lib/modules/$kver/modules.dep" ] || { log "no modules.dep for $kver"; exit 1; }

log "mksquashfs"
rm -f "$out"
mksquashfs "$root" "$out" -comp zstd -Xcompression-level "${LEVEL:-15}" -noappend \
	-wildcards -e 'proc/*' -e 'sys/*' -e 'dev/*' -e 'run/*' -quiet -no-progress >&2
end=$(date +%s)
printf 'debian: %s (version %s, kernel %s, %s bytes, rootfs %s, %ds)\n' \
	"$out" "$version" "$kver" "$(stat -c %s "$out")" "$(du -sh "$root" | cut -f1)" "$((end - start))"
