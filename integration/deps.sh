#!/usr/bin/env bash
# Installs the Debian packages kiln's tests, lab and benchmarks need, when
# they are missing. Safe to run again: it only calls apt-get for what is not
# installed. Usage: integration/deps.sh [test|lab|bench|debian]...
set -euo pipefail

declare -A sets=(
  [test]="systemd e2fsprogs squashfs-tools cpio busybox-static kmod zstd iproute2 curl socat atftp ipmitool openipmi qemu-system-x86 qemu-utils ovmf ipxe kea-admin kea-dhcp4-server dnsmasq-base"
  [lab]="squashfs-tools cpio busybox-static kmod iproute2 curl socat ipmitool openipmi qemu-system-x86 qemu-utils ovmf ipxe"
  [bench]="kea-admin kea-dhcp4-server dnsmasq-base nginx-light atftp tftpd-hpa wrk curl squashfs-tools qemu-system-x86 ipmitool openipmi iproute2"
  [debian]="debootstrap squashfs-tools zstd"
)

want=()
for s in "${@:-test}"; do
  [[ -n "${sets[$s]:-}" ]] || { echo "deps.sh: unknown set $s (test, lab, bench, debian)" >&2; exit 2; }
  for p in ${sets[$s]}; do
    [[ " ${want[*]} " == *" $p "* ]] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want+=("$p")
  done
done
[[ ${#want[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "deps.sh: missing Debian packages: ${want[*]} (run as root to install them)" >&2
  exit 1
fi
echo "deps.sh: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
