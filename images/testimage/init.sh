#!/bin/sh
# /sbin/init of the kiln test image: PID 1 after kiln-init's switch_root.
#
# It mounts nothing: kiln-init moves /proc, /sys, /dev and /run into the new
# root. It checks the boot contract (docs/boot-protocol.md section 3): "/" is
# an overlay and a squashfs is mounted read-only on /run/kiln/lower. Then it
# prints one line on the console and reports the result to kilnd through
# /run/kiln/bin/kiln-init, and stays up doing nothing else. When kiln-init
# mounted a kiln-state filesystem (at kiln.state of the kernel command line),
# it counts its boots in a file there and adds "state=FSTYPE boots=N".
#
# For images/testimage/init_test.sh only, when not PID 1: KILN_MOUNTS,
# KILN_CMDLINE, KILN_RELEASE and KILN_INIT replace /proc/mounts,
# /proc/cmdline, /etc/kiln-release and /run/kiln/bin/kiln-init, and the
# script exits instead of staying up.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mounts=/proc/mounts cmdline=/proc/cmdline release=/etc/kiln-release kiln_init=/run/kiln/bin/kiln-init
if [ $$ -ne 1 ]; then
	mounts=${KILN_MOUNTS:-$mounts} cmdline=${KILN_CMDLINE:-$cmdline}
	release=${KILN_RELEASE:-$release} kiln_init=${KILN_INIT:-$kiln_init}
fi
VERSION=$(cat "$release" 2>/dev/null || echo unknown)
[ $$ -eq 1 ] && [ -c /dev/console ] && exec </dev/console >/dev/console 2>&1

problems=""
if [ -r "$mounts" ]; then
	# The last line for a mount point is the mount that is visible there.
	rootfs=$(awk '$2 == "/" { t = $3 } END { print t }' "$mounts")
	lower=$(awk '$2 == "/run/kiln/lower" { t = $3; o = $4 } END { print t, o }' "$mounts")
	[ "$rootfs" = overlay ] || problems="$problems root=${rootfs:-none}"
	set -- $lower
	case "$1,$2," in
	squashfs,ro,*) ;;
	squashfs,*) problems="$problems lower=squashfs,${2%%,*}" ;;
	*) problems="$problems lower=${1:-none}" ;;
	esac
else
	problems=" no /proc/mounts (was /proc moved into the new root?)"
fi

# The kiln-state filesystem, when kiln-init mounted one.
stateinfo=""
state=$(sed -n 's/.*kiln\.state=\([^ ]*\).*/\1/p' "$cmdline" 2>/dev/null)
if [ -z "$problems" ] && [ -n "$state" ]; then
	fstype=$(awk -v p="$state" '$2 == p { t = $3 } END { print t }' "$mounts")
	if [ -n "$fstype" ]; then
		n=$(cat "$state/boots" 2>/dev/null)
		case $n in '' | *[!0-9]*) n=0 ;; esac
		n=$((n + 1))
		if echo "$n" >"$state/boots" && sync; then
			stateinfo=" state=$fstype boots=$n"
		else
			stateinfo=" state=$fstype unwritable"
		fi
	fi
fi

report() {
	if [ -x "$kiln_init" ]; then
		"$kiln_init" report "$@" || echo "KILN-TESTIMAGE $VERSION report $1: kiln-init exited $?"
	else
		echo "KILN-TESTIMAGE $VERSION report $1: no /run/kiln/bin/kiln-init"
	fi
}

if [ -z "$problems" ]; then
	echo "KILN-TESTIMAGE $VERSION UP root=overlay lower=squashfs,ro$stateinfo"
	report booted "root=overlay lower=squashfs,ro release=$VERSION$stateinfo"
else
	echo "KILN-TESTIMAGE $VERSION BAD$problems"
	report failed "bad mounts:$problems"
fi

[ $$ -eq 1 ] || exit 0

# Stay up. PID 1 must never exit; the wait also reaps orphans.
while :; do
	sleep 3600 &
	wait
done
