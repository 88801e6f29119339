#!/bin/sh
# Host test of the systemd and D-Bus files in units/ (make check-units):
#   - 'systemd-analyze verify' of every unit given (the generated services, the timers) says
#     nothing and succeeds, with the units and the programs their ExecStart= names installed
#     into a scratch root (as after 'make install') and the man pages named by
#     Documentation= found in man/;
#   - 'systemd-analyze security --offline' scores each service at IOD_UNIT_MAX_EXPOSURE (2.0)
#     or lower: the score is printed and compared here, and --threshold checks it again;
#   - the D-Bus activation file and the bus policy agree with the service that has BusName=;
#   - a timer's service is among the units given.
# Usage: units-check.sh [UNIT...] (default: B/units/iodirtyd.service; B defaults to build).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
B=${B:-build}
case $B in /*) ;; *) B=$top/$B ;; esac
[ $# -gt 0 ] || set -- "$B/units/iodirtyd.service"
max=${IOD_UNIT_MAX_EXPOSURE:-2.0}
fail=0

die() {
	echo "units-check: $*" >&2
	exit 1
}
bad() {
	echo "FAIL: $*"
	fail=1
}

command -v systemd-analyze >/dev/null || die "systemd-analyze is missing: run 'make deps' (package systemd)"
command -v man >/dev/null || die "man is missing: run 'make deps' (package man-db); verify checks Documentation="
for unit in "$@"; do
	[ -f "$unit" ] || die "$unit does not exist: run 'make $unit'"
done

# --- scratch root: the units where 'make install' puts them, the executables they name, and
# the distribution's units they depend on (dbus.socket, sysinit.target, timers.target, ...).
root=$(mktemp -d "${TMPDIR:-/tmp}/iodirty-units.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
for unit in "$@"; do
	cp "$unit" "$root/etc/systemd/system/$(basename "$unit")"
	case $unit in *.service) ;; *) continue ;; esac
	exec_path=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
	[ -n "$exec_path" ] || die "$unit has no ExecStart="
	case $exec_path in /*) ;; *) die "ExecStart= of $unit is not an absolute path: $exec_path" ;; esac
	mkdir -p "$root$(dirname "$exec_path")"
	if [ -x "$B/$(basename "$exec_path")" ]; then
		cp "$B/$(basename "$exec_path")" "$root$exec_path"
	else
		printf '#!/bin/sh\nexit 1\n' >"$root$exec_path" # a stand-in: only its existence matters
		chmod 0755 "$root$exec_path"
	fi
done
for d in /usr/lib/systemd/system /lib/systemd/system; do
	if [ -d "$d" ] && [ ! -e "$root/usr/lib/systemd/system" ]; then
		cp -a "$d" "$root/usr/lib/systemd/system"
	fi
done
[ -e "$root/usr/lib/systemd/system/dbus.socket" ] ||
	die "the system has no dbus.socket: run 'make deps' (package dbus)"
mkdir -p "$root/man"
for m in "$top"/man/*.[1-8]; do
	s=${m##*.}
	mkdir -p "$root/man/man$s"
	cp "$m" "$root/man/man$s/"
done

for unit in "$@"; do
	name=$(basename "$unit")
	# --- verify: no output at all, exit 0
	out=$(cd "$root" && MANPATH="$root/man" SYSTEMD_LOG_COLOR=0 \
		systemd-analyze verify --root="$root" "$name" 2>&1) && rc=0 || rc=$?
	if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
		echo "$out" | sed 's/^/  | /'
		bad "systemd-analyze verify $name (exit $rc, $(echo "$out" | grep -c .) line(s) of output)"
	else
		echo "PASS: systemd-analyze verify $name: no warnings"
	fi

	case $name in
	*.timer)
		svc=$(sed -n 's/^Unit=//p' "$unit")
		[ -n "$svc" ] || svc=${name%.timer}.service
		if [ -e "$root/etc/systemd/system/$svc" ]; then
			echo "PASS: $name starts $svc, which is checked here too"
		else
			bad "$name starts $svc, which is not among the units given"
		fi
		continue
		;;
	esac
	# --- security: the overall exposure level, at most $max
	threshold=$(echo "$max" | awk '{ printf "%d", $1 * 10 + 0.5 }') # systemd counts in tenths
	out=$(systemd-analyze security --no-pager --offline=true --root="$root" \
		--threshold="$threshold" "$name" 2>&1) && rc=0 || rc=$?
	score=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	if [ -z "$score" ]; then
		echo "$out" | sed 's/^/  | /'
		bad "systemd-analyze security printed no overall exposure level (exit $rc)"
	else
		echo "$out" | grep '^✗' | sed 's/  */ /g; s/^/  | /'
		echo "units-check: exposure level of $name: $score (at most $max)"
		if awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }' && [ "$rc" -eq 0 ]; then
			echo "PASS: systemd-analyze security $name: $score <= $max"
		else
			bad "systemd-analyze security $name: $score > $max (exit $rc)"
		fi
	fi

	grep -q '^BusName=' "$unit" || continue
	# --- the activation file and the bus policy name the same service and bus name
	bus=$(sed -n 's/^BusName=//p' "$unit")
	act=$top/units/org.iodirty.Tracker1.dbus-service
	policy=$top/units/org.iodirty.Tracker1.conf
	if [ "$(sed -n 's/^Name=//p' "$act")" != "$bus" ] ||
		[ "$(sed -n 's/^SystemdService=//p' "$act")" != "$name" ]; then
		bad "$act does not activate $name for $bus"
	elif ! grep -q "own=\"$bus\"" "$policy"; then
		bad "$policy does not let anyone own $bus"
	else
		echo "PASS: activation file and bus policy match $name ($bus)"
	fi
	if command -v xmllint >/dev/null; then
		xmllint --noout "$policy" || bad "$policy is not well-formed XML"
	fi
done

exit $fail
