#!/bin/sh
# Tests for testimage/init.sh, run with busybox sh (the image's shell):
#   images/testimage/init_test.sh    (also: make -C images check)
# Each case feeds a /proc/mounts and checks the console line and the
# `kiln-init report` call the script makes.
set -u
here=$(cd "$(dirname "$0")" && pwd)
sh=${SH:-$(command -v busybox >/dev/null && echo "busybox sh" || echo sh)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# A stand-in kiln-init that records its arguments, one a line.
cat >"$tmp/kiln-init" <<'FAKE'
#!/bin/sh
for a in "$@"; do echo "$a"; done >"$KILN_TEST_OUT"
FAKE
chmod +x "$tmp/kiln-init"
echo 7 >"$tmp/release"

echo "console=ttyS0 kiln.state=$tmp/state quiet" >"$tmp/cmdline"
mkdir "$tmp/state"

check() { # NAME MOUNTS-FILE-CONTENT WANT-LINE WANT-REPORT(args joined by |)
	name=$1
	printf '%s' "$2" >"$tmp/mounts"
	rm -f "$tmp/report"
	out=$(KILN_MOUNTS=$tmp/mounts KILN_CMDLINE=$tmp/cmdline KILN_RELEASE=$tmp/release KILN_INIT=$tmp/kiln-init \
		KILN_TEST_OUT=$tmp/report $sh "$here/init.sh" 2>&1)
	got=$(tr '\n' '|' <"$tmp/report" 2>/dev/null | sed 's/|$//')
	if [ "$out" != "$3" ] || [ "$got" != "$4" ]; then
		echo "FAIL $name"
		echo "  console: $out"
		echo "  want:    $3"
		echo "  report:  $got"
		echo "  want:    $4"
		fails=$((fails + 1))
	else
		echo "ok   $name"
	fi
}

good='rootfs / rootfs rw 0 0
proc /proc proc rw,nosuid 0 0
overlay / overlay rw,relatime,lowerdir=/run/kiln/lower,upperdir=/run/kiln/rw/upper,workdir=/run/kiln/rw/work 0 0
tmpfs /run tmpfs rw 0 0
/dev/loop0 /run/kiln/lower squashfs ro,relatime 0 0
'
check "contract met" "$good" \
	"KILN-TESTIMAGE 7 UP root=overlay lower=squashfs,ro" \
	"report|booted|root=overlay lower=squashfs,ro release=7"

# kiln-init mounted a kiln-state filesystem: boots are counted there.
withstate="$good/dev/vda $tmp/state ext4 rw,relatime 0 0
"
check "state, first boot" "$withstate" \
	"KILN-TESTIMAGE 7 UP root=overlay lower=squashfs,ro state=ext4 boots=1" \
	"report|booted|root=overlay lower=squashfs,ro release=7 state=ext4 boots=1"
check "state, second boot" "$withstate" \
	"KILN-TESTIMAGE 7 UP root=overlay lower=squashfs,ro state=ext4 boots=2" \
	"report|booted|root=overlay lower=squashfs,ro release=7 state=ext4 boots=2"
echo garbage >"$tmp/state/boots"
check "state, unreadable count" "$withstate" \
	"KILN-TESTIMAGE 7 UP root=overlay lower=squashfs,ro state=ext4 boots=1" \
	"report|booted|root=overlay lower=squashfs,ro release=7 state=ext4 boots=1"

check "root is not overlay" 'rootfs / rootfs rw 0 0
/dev/loop0 /run/kiln/lower squashfs ro,relatime 0 0
' "KILN-TESTIMAGE 7 BAD root=rootfs" "report|failed|bad mounts: root=rootfs"

check "lower writable" 'overlay / overlay rw 0 0
/dev/loop0 /run/kiln/lower squashfs rw,relatime 0 0
' "KILN-TESTIMAGE 7 BAD lower=squashfs,rw" "report|failed|bad mounts: lower=squashfs,rw"

check "no lower" 'overlay / overlay rw 0 0
' "KILN-TESTIMAGE 7 BAD lower=none" "report|failed|bad mounts: lower=none"

check "lower not squashfs" 'overlay / overlay rw 0 0
tmpfs /run/kiln/lower tmpfs ro 0 0
' "KILN-TESTIMAGE 7 BAD lower=tmpfs" "report|failed|bad mounts: lower=tmpfs"

# No /proc/mounts at all (kiln-init did not move /proc).
rm -f "$tmp/report"
out=$(KILN_MOUNTS=$tmp/nonexistent KILN_RELEASE=$tmp/release KILN_INIT=$tmp/kiln-init \
	KILN_TEST_OUT=$tmp/report $sh "$here/init.sh" 2>&1)
case "$out" in
"KILN-TESTIMAGE 7 BAD no /proc/mounts"*) echo "ok   no proc" ;;
*) echo "FAIL no proc: $out"; fails=$((fails + 1)) ;;
esac
[ "$(sed -n 2p "$tmp/report")" = failed ] || { echo "FAIL no proc: report $(cat "$tmp/report")"; fails=$((fails + 1)); }

[ "$fails" -eq 0 ] || { echo "$fails failed"; exit 1; }
echo PASS
