#!/bin/bash
# testimage/build.sh OUT VERSION — build the kiln test image as a squashfs.
#
# A tiny image: busybox-static userland, the Debian cloud kernel at
# /boot/vmlinuz-<kver> (+ /vmlinuz), its netboot-relevant modules at
# /lib/modules/<kver> (depmod'ed), /etc/kiln-release = VERSION and the
# /sbin/init from init.sh. With BROKEN=1 in the environment the image has no
# init at all (no /sbin/init, /init, /linuxrc), which kiln-init must refuse.
#
# Environment: CACHE (package cache, default images/build/cache), BROKEN,
# COMP (mksquashfs compressor, default zstd; the cloud kernel has
# SQUASHFS_ZSTD=y, and gzip works everywhere), LEVEL (zstd level, default 3:
# 0.7 s instead of 21 s at mksquashfs's default 15, for a 15% larger image).
# The staging tree is kept next to OUT as OUT-without-.squashfs + ".rootfs".
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 OUT.squashfs VERSION" >&2; exit 2; }
out=$1 version=$2
case $version in *[!A-Za-z0-9._+-]*|"") echo "$0: VERSION must match [A-Za-z0-9._+-]+" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
images=$(dirname "$here")
cache=${CACHE:-$images/build/cache}
comp=${COMP:-zstd}
level=${LEVEL:-3}
start=$(date +%s.%N)

eval "$("$images/kernel.sh" "$cache")"

mkdir -p "$(dirname "$out")"
root=${out%.squashfs}.rootfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,boot,lib/modules}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

# busybox + applet symlinks (relative to /bin/busybox).
install -m 0755 "$BUSYBOX_ROOT/bin/busybox" "$root/bin/busybox"
"$root/bin/busybox" --list-full | while read -r applet; do
	case $applet in
	bin/busybox | sbin/init | linuxrc | init) continue ;;
	esac
	mkdir -p "$root/$(dirname "$applet")"
	rel=$(realpath -m --relative-to="$root/$(dirname "$applet")" "$root/bin/busybox")
	ln -sf "$rel" "$root/$applet"
done

# Kernel and its modules.
install -m 0644 "$KERNEL_ROOT/boot/vmlinuz-$KVER" "$root/boot/vmlinuz-$KVER"
install -m 0644 "$KERNEL_ROOT/boot/config-$KVER" "$root/boot/config-$KVER"
ln -s "boot/vmlinuz-$KVER" "$root/vmlinuz"
src=$KERNEL_ROOT/lib/modules/$KVER
dst=$root/lib/modules/$KVER
mkdir -p "$dst"
cp -a "$src/modules.builtin" "$src/modules.builtin.modinfo" "$src/modules.order" "$dst/"
# Keep what a netboot (and a kiln-state disk) can need; drop the rest of the
# drivers (GPU, InfiniBand, industrial I/O, SCSI targets...). Everything
# under arch, crypto, fs, lib, net, block and the listed driver classes stays,
# so dependencies of kept modules stay too (depmod -e below checks that).
keep="arch block crypto fs lib mm net virt
	drivers/net drivers/block drivers/virtio drivers/scsi drivers/nvme drivers/ata
	drivers/md drivers/char drivers/hid drivers/input drivers/ptp drivers/pps
	drivers/dca drivers/pci drivers/hv drivers/xen drivers/vhost drivers/nvdimm
	drivers/acpi drivers/platform drivers/firmware drivers/i2c drivers/misc"
for d in $keep; do
	[ -d "$src/kernel/$d" ] || continue
	mkdir -p "$dst/kernel/$(dirname "$d")"
	cp -a "$src/kernel/$d" "$dst/kernel/$d"
done
# Debian ships no real System.map, so depmod cannot flag a pruned
# dependency as an unknown symbol. Compare with the full tree instead: a kept
# module whose dependencies differ from the full kernel's lost one of them to
# the pruning; drop it too (these are RDMA, WWAN, CD-ROM... modules) and
# repeat until every kept module has exactly its full dependency list.
if [ ! -s "$src/modules.dep" ]; then
	depmod -a -b "$KERNEL_ROOT" "$KVER"
fi
dropped=0
while :; do
	depmod -a -b "$root" "$KVER"
	broken=$(awk -F: 'NR == FNR { full[$1] = $2; next } full[$1] != $2 { print $1 }' \
		"$src/modules.dep" "$dst/modules.dep")
	[ -n "$broken" ] || break
	for m in $broken; do
		rm -f "$dst/$m"
		dropped=$((dropped + 1))
	done
done
echo "testimage: kept $(wc -l <"$dst/modules.dep") of $(wc -l <"$src/modules.dep") modules ($dropped dropped for pruned dependencies)" >&2

# Identity, a minimal passwd, init.
if [ -n "${BROKEN:-}" ]; then
	echo "$version broken" >"$root/etc/kiln-release"
else
	echo "$version" >"$root/etc/kiln-release"
	install -m 0755 "$here/init.sh" "$root/sbin/init"
fi
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo "kiln-testimage" >"$root/etc/hostname"

rm -f "$out"
compopts=(-comp "$comp")
[ "$comp" != zstd ] || compopts+=(-Xcompression-level "$level")
mksquashfs "$root" "$out" "${compopts[@]}" -noappend -all-root -no-xattrs \
	-mkfs-time 0 -all-time 0 -quiet -no-progress >&2
end=$(date +%s.%N)
printf 'testimage: %s (version %s%s, kernel %s, %s bytes, %s, %.1fs)\n' \
	"$out" "$version" "${BROKEN:+, broken}" "$KVER" "$(stat -c %s "$out")" "$comp" \
	"$(echo "$end - $start" | bc)"
