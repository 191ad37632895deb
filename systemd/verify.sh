#!/usr/bin/env bash
# Runs systemd-analyze verify on kiln's units, with ExecStart pointing at
# freshly built binaries (verify checks that the executables exist).
# Usage: systemd/verify.sh BINDIR
set -euo pipefail
bin=$(cd "${1:?usage: verify.sh BINDIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for u in kilnd.service kiln-refresh.service kiln-refresh.timer; do
	sed "s#/usr/local/bin/#$bin/#g; s#EnvironmentFile=/etc/kiln/refresh.env#EnvironmentFile=-$here/refresh.env#" "$here/$u" > "$tmp/$u"
done
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp"/kilnd.service "$tmp"/kiln-refresh.service "$tmp"/kiln-refresh.timer
echo "systemd-analyze verify: ok"
