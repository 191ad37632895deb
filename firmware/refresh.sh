#!/bin/sh
# refresh.sh — re-copy the iPXE binaries kiln serves from Debian's installed
# `ipxe` package and rewrite SHA256SUMS. Run from anywhere:
#
#   apt-get install -y ipxe && firmware/refresh.sh
#
# Afterwards update the version line in README.md (the script prints it) and
# commit the binaries, SHA256SUMS and README.md together.
set -eu

src=${IPXE_DIR:-/usr/lib/ipxe}
dir=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
files="undionly.kpxe ipxe.efi snponly.efi"

for f in $files; do
	if [ ! -r "$src/$f" ]; then
		echo "refresh.sh: $src/$f not found; install Debian's ipxe package (apt-get install -y ipxe)" >&2
		exit 1
	fi
done

for f in $files; do
	# cp -L: ipxe.efi in /usr/lib/ipxe is a symlink to /boot/ipxe.efi.
	cp -L "$src/$f" "$dir/$f.tmp"
	chmod 0644 "$dir/$f.tmp"
	mv "$dir/$f.tmp" "$dir/$f"
done

(cd "$dir" && sha256sum $files > SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)

echo "refreshed from: $(dpkg-query -W -f='${Package} ${Version}' ipxe 2>/dev/null || echo 'ipxe (version unknown: dpkg-query failed)')"
cat "$dir/SHA256SUMS"
