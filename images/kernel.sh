#!/bin/bash
# kernel.sh — fetch the Debian cloud kernel and busybox-static into a cache.
#
# Usage: images/kernel.sh [CACHE]        (default CACHE: images/build/cache)
#
# Downloads, with `apt-get download`, the exact kernel package that
# linux-image-cloud-amd64 depends on and busybox-static, and unpacks each with
# `dpkg -x` under CACHE/root-<package>. A package already unpacked is reused.
# Prints shell assignments on stdout that callers eval:
#   KVER=6.1.0-56-cloud-amd64
#   KERNEL_ROOT=/abs/CACHE/root-linux-image-6.1.0-56-cloud-amd64
#   BUSYBOX_ROOT=/abs/CACHE/root-busybox-static
# Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-$here/build/cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# A go.mod makes the build tree its own (empty) module, so `go ... ./...` in
# the kiln module never walks the unpacked packages and image trees.
[ -e "$here/build/go.mod" ] || { mkdir -p "$here/build" && echo "module kiln-images-build" >"$here/build/go.mod"; }

log() { echo "kernel.sh: $*" >&2; }

kpkg_name() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

kpkg=$(kpkg_name || true)
if [ -z "$kpkg" ]; then
	# A stamp of the last resolution lets an offline rebuild reuse the cache.
	if [ -s "$cache/kernel-package" ] && [ -d "$cache/root-$(cat "$cache/kernel-package")" ]; then
		kpkg=$(cat "$cache/kernel-package")
	else
		log "apt-cache knows no linux-image-cloud-amd64; running apt-get update once"
		apt-get update -qq >&2
		kpkg=$(kpkg_name)
	fi
fi
[ -n "$kpkg" ] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
echo "$kpkg" >"$cache/kernel-package"

fetch() { # fetch PACKAGE: download into $cache/debs and unpack into $cache/root-PACKAGE
	local pkg=$1 root=$cache/root-$1
	if [ -f "$root/.unpacked" ]; then
		log "reusing $root"
		return
	fi
	mkdir -p "$cache/debs"
	local deb
	deb=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
	if [ -z "$deb" ]; then
		log "downloading $pkg"
		(cd "$cache/debs" && apt-get download -q "$pkg" >&2)
		deb=$(ls "$cache/debs/${pkg}_"*.deb | head -n1)
	fi
	rm -rf "$root.tmp"
	mkdir -p "$root.tmp"
	dpkg -x "$deb" "$root.tmp"
	touch "$root.tmp/.unpacked"
	rm -rf "$root"
	mv "$root.tmp" "$root"
	log "unpacked $deb"
}

fetch "$kpkg"
fetch busybox-static

kroot=$cache/root-$kpkg
kver=$(ls "$kroot/lib/modules" | head -n1)
[ -n "$kver" ] || { log "no lib/modules in $kpkg"; exit 1; }

echo "KVER=$kver"
echo "KERNEL_ROOT=$kroot"
echo "BUSYBOX_ROOT=$cache/root-busybox-static"
