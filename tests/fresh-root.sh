#!/bin/sh
# Run a command of the README in a freshly made minimal Debian 12 root, as a new user on a
# fresh machine would: proof that the README's set-up installs everything it needs.
#
#   fresh-root.sh [COMMAND]     default: the README's test command, "sh tests/deps.sh && make check"
#
# The root is made with 'mmdebstrap --variant=minbase bookworm' from the host's apt sources
# (and the host's Acquire:: settings that reaching that archive needs); nothing else of the
# host goes in: not its packages, not its guest kernel cache. The tree is copied in (tracked
# and untracked files, not the ignored build folders), with ../shared beside it when it
# exists; /proc, /sys and /dev are bind-mounted (as slaves, so nothing propagates back).
# Everything is unmounted and removed on every way out.
#
# Environment: IOD_FRESH_DIR (parent folder of the root, default /var/tmp),
# IOD_FRESH_KEEP=1 (keep the root afterwards, for a look inside).
# Needs root and mmdebstrap (installed here with apt-get when it is missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cmd=${1:-sh tests/deps.sh && make check}
parent=${IOD_FRESH_DIR:-/var/tmp}

say() { echo "fresh-root: $*" >&2; }
die() {
	say "$*"
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root: it makes a root file system and chroots into it"
if ! command -v mmdebstrap >/dev/null; then
	say "installing mmdebstrap"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >&2 ||
		die "cannot install mmdebstrap"
fi

root=$(mktemp -d "$parent/iodirty-fresh.XXXXXX")
mounts=

cleanup() {
	rc=$?
	trap - EXIT INT TERM HUP
	# Whatever still runs inside (a dbus-daemon, a QEMU) would keep the mounts busy.
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
	done
	for m in $mounts; do
		umount -R "$root/$m" 2>/dev/null || umount -R -l "$root/$m" 2>/dev/null || true
	done
	if [ "${IOD_FRESH_KEEP:-}" = 1 ]; then
		say "kept $root"
	elif [ -n "$root" ] && [ -d "$root" ]; then
		# Never remove through a mount that is still there.
		if grep -q " $root/" /proc/self/mounts; then
			say "mounts remain under $root; not removing it"
		else
			rm -rf "$root"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# The host's apt sources, and the Acquire:: settings that reaching them needs.
sources=
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -s "$f" ] && sources="$sources $f"
done
[ -n "$sources" ] || die "the host has no apt sources"
aptopts=$(apt-config dump 2>/dev/null | grep -E '^Acquire::(Check-Valid-Until|Check-Date|http::Proxy|https::Proxy) ' || true)

say "making a minimal Debian 12 root in $root"
start=$(date +%s)
set -- --variant=minbase --mode=root
while IFS= read -r opt; do
	[ -n "$opt" ] && set -- "$@" --aptopt="$opt"
done <<EOF
$aptopts
EOF
# shellcheck disable=SC2086
mmdebstrap "$@" bookworm "$root" $sources >"$root.mmdebstrap.log" 2>&1 || {
	tail -20 "$root.mmdebstrap.log" >&2
	rm -f "$root.mmdebstrap.log"
	die "mmdebstrap failed"
}
rm -f "$root.mmdebstrap.log"
say "root made in $(($(date +%s) - start)) s"

# The tree, as git sees it (tracked and untracked files; not build/ and the like).
dest=/work/$(basename "$top")
mkdir -p "$root$dest"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$top" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf -) | tar -C "$root$dest" -xf -
	cp -a "$top/.git" "$root$dest/.git"
else
	tar -C "$top" --exclude=./build --exclude='./build-*' -cf - . | tar -C "$root$dest" -xf -
fi
[ -d "$top/../shared" ] && cp -a "$top/../shared" "$root/work/shared"

for m in proc sys dev; do
	mkdir -p "$root/$m"
	mount --rbind "/$m" "$root/$m"
	mount --make-rslave "$root/$m"
	mounts="$m $mounts"
done
# A minbase root has no resolver configuration of its own; apt needs the host's.
[ -e /etc/resolv.conf ] && cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

say "running in the fresh root, in $dest: $cmd"
start=$(date +%s)
rc=0
chroot "$root" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	/bin/sh -c "cd '$dest' && $cmd" || rc=$?
say "'$cmd' exited with $rc after $(($(date +%s) - start)) s"
exit "$rc"
