#!/bin/sh
# Guest tests of the 'systemd' shape, run by iodirty-test.service under systemd as PID 1.
# Each check prints '@@IOD@@ result NAME RC' on the console (tests/vm/run counts them); at
# the end '@@IOD@@ done', and the guest powers off.
#
#   boot         systemd reached iodirty-test.target; prints how long that took
#   activation   a bus call starts iodirtyd.service through the D-Bus activation file,
#                and the unit is active under the installed, hardened unit
#   sandbox      the running daemon has only CAP_IPC_LOCK, no_new_privs, a seccomp filter,
#                its own network namespace and a read-only /, and still watches uevents
#   bus          it owns org.iodirty.Tracker1; introspection and properties work
#   policy       the bus policy: 'nobody' may introspect but not call; a member of the
#                group iodirty may call
#   session      a real owner-mode session: /dev/iommu, guest memory pinned into an IOAS
#   adopt        an adopt-mode session on a kernel mock device (mockvm, a stand-in VMM):
#                pages the device dirties come back from HarvestRanges, exactly
#   watchdog     a daemon that stops answering (SIGSTOP) is killed and restarted by systemd
#   fdstore-*    both sessions survive that crash and a 'systemctl restart' (fd store)
#   adopt-after-restart  the restarted daemon still harvests the mock device's HWPT exactly
#   python-client  a client in another language: client/examples/iodirty-python-example.py
#                (python3-dbus) harvests a second mock device's session, reads the log memfd
#                it is passed and acknowledges; it sees exactly the pages the device
#                dirtied, and the same as the C readers (iodirtyctl, HarvestRanges) on the
#                same round. No python3 or dbus-python in the guest fails it.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER='' SYSTEMD_COLORS=0
dest=org.iodirty.Tracker1
obj=/org/iodirty/Tracker1
mgr=org.iodirty.Manager1
unit=iodirtyd.service
session=sd-test
memfile=/dev/shm/iodirty-guest-mem
start=$(cut -d' ' -f1 /proc/uptime)

say() { printf '\n@@IOD@@ %s\n' "$*"; }
log() { echo "guest-systemd: $*"; }
result() { # result NAME RC
	say result "$1" "$2"
}
prop() { systemctl show -P "$1" "$unit"; }
call() { busctl --system call "$dest" "$@"; }

# wait_for SECONDS COMMAND...: until COMMAND succeeds, polling twice a second
wait_for() {
	n=$(($1 * 2))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
		n=$((n - 1))
	done
	return 1
}
is_active() { [ "$(systemctl is-active "$unit")" = active ]; }
has_session() { call "$obj" "$mgr" GetSession s "$session"; }

# --- boot ---------------------------------------------------------------------------------
log "systemd reached the test at ${start}s of uptime; $(systemctl is-system-running 2>&1)"
result boot 0

# --- activation ---------------------------------------------------------------------------
t_activation() {
	if is_active; then
		log "iodirtyd is already active before any bus call"
		return 1
	fi
	if ! busctl --system --timeout=120 get-property "$dest" "$obj" "$mgr" Version ||
		! is_active; then
		log "$unit is $(systemctl is-active "$unit") after activation:"
		systemctl status --no-pager --lines=0 "$unit"
		journalctl -b --no-pager -o short-monotonic -u "$unit" | tail -25
		return 1
	fi
	log "activated: $unit is active, MainPID $(prop MainPID), from $(prop FragmentPath) + $(prop DropInPaths)"
}
t_activation
rc=$?
result activation $rc
if [ $rc -ne 0 ]; then
	# Everything else needs the running daemon: report it failed at once.
	for t in sandbox bus policy session adopt watchdog fdstore-crash fdstore-restart \
		adopt-after-restart python-client; do
		result $t 1
	done
	say 'done'
	systemctl --force --force reboot
	exit 1
fi

# --- sandbox ------------------------------------------------------------------------------
t_sandbox() {
	pid=$(prop MainPID)
	[ "$pid" -gt 0 ] 2>/dev/null || return 1
	st=/proc/$pid/status
	rc=0
	for want in "CapEff:	0000000000004000" "CapBnd:	0000000000004000" "NoNewPrivs:	1" "Seccomp:	2"; do
		if ! grep -q "^$want\$" "$st"; then
			log "sandbox: want '$want', have '$(grep "^${want%%:*}:" "$st")'"
			rc=1
		fi
	done
	if [ "$(readlink "/proc/$pid/ns/net")" = "$(readlink /proc/1/ns/net)" ]; then
		log "sandbox: the daemon shares PID 1's network namespace (PrivateNetwork=yes?)"
		rc=1
	fi
	if ! awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | grep -q '^ro'; then
		log "sandbox: / is not read-only for the daemon (ProtectSystem=strict?)"
		rc=1
	fi
	if journalctl -b -u "$unit" -o cat | grep -q "Failed to watch kernel uevents"; then
		log "sandbox: the daemon cannot watch uevents in its sandbox"
		rc=1
	fi
	[ $rc -eq 0 ] && log "sandbox: caps $(grep CapEff "$st" | cut -f2), no_new_privs, seccomp, private netns, ro /"
	return $rc
}
t_sandbox
result sandbox $?

# --- bus ----------------------------------------------------------------------------------
t_bus() {
	owner=$(busctl --system call org.freedesktop.DBus /org/freedesktop/DBus \
		org.freedesktop.DBus GetConnectionUnixProcessID s "$dest" | awk '{ print $2 }')
	if [ "$owner" != "$(prop MainPID)" ]; then
		log "bus: $dest is owned by pid '$owner', not by MainPID $(prop MainPID)"
		return 1
	fi
	busctl --system introspect "$dest" "$obj" | grep -q "^$mgr " || return 1
	busctl --system get-property "$dest" "$obj" "$mgr" IommufdAvailable | grep -qx 'b true' ||
		{ log "bus: IommufdAvailable is not true in the sandbox"; return 1; }
}
t_bus
result bus $?

# --- policy -------------------------------------------------------------------------------
as() { # as USER COMMAND...
	u=$1
	shift
	setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups "$@"
}
t_policy() {
	rc=0
	as nobody busctl --system introspect "$dest" "$obj" >/dev/null ||
		{ log "policy: nobody cannot introspect"; rc=1; }
	as nobody busctl --system get-property "$dest" "$obj" "$mgr" Version >/dev/null ||
		{ log "policy: nobody cannot read properties"; rc=1; }
	# gdbus prints the error name and message: the bus's refusal, not the daemon's
	out=$(as nobody gdbus call --system -d "$dest" -o "$obj" -m "$mgr.ListSessions" 2>&1) &&
		{ log "policy: nobody may call ListSessions"; rc=1; }
	echo "$out" | grep -q "DBus.Error.AccessDenied: Rejected send message" ||
		{ log "policy: nobody's call was not refused by the bus: $out"; rc=1; }
	out=$(as iodirty-test busctl --system call "$dest" "$obj" "$mgr" ListSessions 2>&1) ||
		{ log "policy: a member of group iodirty cannot call: $out"; rc=1; }
	return $rc
}
t_policy
result policy $?

# --- session ------------------------------------------------------------------------------
t_session() {
	path=$(call "$obj" "$mgr" CreateSession 'sa{sv}' "$session" 1 disconnect_policy s keep |
		awk '{ print $2 }' | tr -d '"')
	[ -n "$path" ] || return 1
	truncate -s 2M "$memfile" || return 1
	# busctl cannot send fds; gdbus passes its own fd 3 (opened read-write) as the memfd
	gdbus call --system -d "$dest" -o "$path" -m org.iodirty.Session1.AddMemory \
		3 0 2097152 0 3<>"$memfile" || return 1
	call "$path" org.iodirty.Session1 Start || return 1
	call "$path" org.iodirty.Session1 HarvestRanges 'a{sv}' 0 || return 1
	log "session: $path with 2 MiB of pinned guest memory, tracking; fd store holds $(prop NFileDescriptorStore) fd(s)"
}
t_session
result session $?

# --- adopt (kernel mock device) -----------------------------------------------------------
vm=mock-vm
vm_base=16777216 # IOVA = GPA of the mock device's memory: the start of the mock aperture
vm_size=4194304
# expect_dirty OFFSET PAGES: one HarvestRanges round holds exactly that range, precisely
expect_dirty() {
	out=$(call "$vm_path" org.iodirty.Session1 HarvestRanges 'a{sv}' 0) || return 1
	want="1 $((vm_base + $1)) $(($2 * 4096)) false $2 true"
	if ! echo "$out" | grep -qE "^ta\(tt\)btbt [0-9]+ $want "; then
		log "adopt: HarvestRanges answered '$out', want '<round> $want <usec>'"
		return 1
	fi
	# the round stays pending until the client has it: acknowledge it
	call "$vm_path" org.iodirty.Session1 Acknowledge t "$(echo "$out" | awk '{ print $2 }')" || return 1
	log "adopt: $2 page(s) at GPA $((vm_base + $1)) dirty, precise"
}
mark() { # mark OFFSET PAGES: the mock device dirties PAGES pages at vm_base + OFFSET
	echo "mark $1 $2" >&7
	if ! read -r word n <&8 || [ "$word" != marked ] || ! [ "$n" -gt 0 ]; then
		log "adopt: mockvm answered '$word $n' to 'mark $1 $2'"
		return 1
	fi
}
t_adopt() {
	mockvm=/usr/local/libexec/iodirty/mockvm
	[ -x "$mockvm" ] || { log "adopt: no mockvm (tests/vm/mockvm.c was not built)"; return 1; }
	rm -f /run/iod-vm.in /run/iod-vm.out
	mkfifo /run/iod-vm.in /run/iod-vm.out || return 1
	IOD_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket \
		"$mockvm" "$vm" "$vm_size" </run/iod-vm.in >/run/iod-vm.out &
	exec 7>/run/iod-vm.in
	exec 8</run/iod-vm.out
	read -r word vm_path ioas hwpt <&8
	[ "$word" = ready ] || { log "adopt: mockvm did not adopt: '$word $vm_path'"; return 1; }
	log "adopt: mockvm lent ioas $ioas, hwpt $hwpt as $vm_path"
	call "$vm_path" org.iodirty.Session1 AddRegion tt "$vm_base" "$vm_size" || return 1
	call "$vm_path" org.iodirty.Session1 Start || return 1
	mark 0 3 && expect_dirty 0 3
}
t_adopt
rc_adopt=$?
result adopt $rc_adopt

# --- watchdog -----------------------------------------------------------------------------
t_watchdog() {
	pid=$(prop MainPID)
	restarts=$(prop NRestarts)
	log "watchdog: WatchdogUSec=$(prop WatchdogUSec); stopping pid $pid (SIGSTOP)"
	kill -STOP "$pid" || return 1
	new_pid() { p=$(prop MainPID) && [ "$p" -gt 0 ] && [ "$p" != "$pid" ] && is_active; }
	if ! wait_for 90 new_pid; then
		kill -CONT "$pid"
		log "watchdog: no restart within 90s: $(systemctl status --no-pager "$unit" | head -5)"
		return 1
	fi
	[ "$(prop NRestarts)" -gt "$restarts" ] || return 1
	journalctl -b -u "$unit" -o cat | grep -i "watchdog timeout" | tail -1 | sed 's/^/guest-systemd: /'
	log "watchdog: restarted as pid $(prop MainPID), NRestarts $(prop NRestarts)"
}
t_watchdog
result watchdog $?

# --- fd store -----------------------------------------------------------------------------
fdstore_check() { # fdstore_check WHAT
	if wait_for 10 has_session; then
		log "fdstore: session $session is back after $1 ($(prop NFileDescriptorStore) fd(s) stored)"
		call "$obj" "$mgr" ListSessions
		if [ $rc_adopt -eq 0 ] && ! call "$obj" "$mgr" GetSession s "$vm" >/dev/null; then
			log "fdstore: the adopt-mode session $vm is gone after $1"
			return 1
		fi
		return 0
	fi
	log "fdstore: session $session is gone after $1: the fd store holds $(prop NFileDescriptorStore) fd(s);"
	log "fdstore: the daemon does not restore sessions from systemd's fd store (daemon/fdstore.c)"
	return 1
}
fdstore_check "the watchdog restart"
result fdstore-crash $?
t_restart() {
	has_session || call "$obj" "$mgr" CreateSession 'sa{sv}' "$session" 1 disconnect_policy s keep
	systemctl restart "$unit" || return 1
	fdstore_check "systemctl restart"
}
t_restart
result fdstore-restart $?

t_adopt_again() {
	[ $rc_adopt -eq 0 ] || { log "adopt-after-restart: no adopt-mode session"; return 1; }
	mark 1048576 5 && expect_dirty 1048576 5
}
t_adopt_again
result adopt-after-restart $?

# --- python-client ------------------------------------------------------------------------
py_vm=pyclient-vm
py=/usr/local/libexec/iodirty/iodirty-python-example.py
# pymark OFFSET PAGES...: the second mock device dirties PAGES pages at vm_base + OFFSET
pymark() {
	while [ $# -ge 2 ]; do
		echo "mark $1 $2" >&5
		if ! read -r word n <&6 || [ "$word" != marked ]; then
			log "python-client: mockvm answered '$word $n' to 'mark $1 $2'"
			return 1
		fi
		shift 2
	done
}
# runs OFFSET PAGES...: those marks as the 'START LENGTH' lines (hex bytes) of a round
runs() {
	while [ $# -ge 2 ]; do
		printf '0x%x 0x%x\n' $((vm_base + $1)) $(($2 * 4096))
		shift 2
	done
}
# py_round ARGS...: one round of the Python client; sets py_rnd, py_regions ('GPA LENGTH
# DIRTY' lines) and py_dirty ('START LENGTH' lines)
py_round() {
	out=$(python3 "$py" "$@" "$py_vm" 2>&1)
	rc=$?
	echo "$out" | sed 's/^/guest-systemd: python: /'
	[ $rc -eq 0 ] || return 1
	py_rnd=$(echo "$out" | awk '$1 == "round" { sub(":", "", $2); print $2 }')
	py_regions=$(echo "$out" | awk '$1 == "region" { print $2, $3, $4 }')
	py_dirty=$(echo "$out" | awk '$1 == "dirty" { print $2, $3 }')
}
same() { # same WHAT HAVE WANT
	[ "$2" = "$3" ] && return 0
	log "python-client: $1 has:"
	echo "$2" | sed 's/^/guest-systemd:     /'
	log "python-client: want:"
	echo "$3" | sed 's/^/guest-systemd:     /'
	return 1
}
t_python() {
	# Nothing is skipped: tests/deps.sh installs python3 and python3-dbus, and the guest
	# runs the host's userspace.
	if ! python3 -c 'import dbus, _dbus_bindings, mmap'; then
		log "python-client: no python3 with dbus-python in the guest (packages python3 python3-dbus)"
		return 1
	fi
	[ -f "$py" ] || { log "python-client: $py was not staged"; return 1; }
	mockvm=/usr/local/libexec/iodirty/mockvm
	[ -x "$mockvm" ] || { log "python-client: no mockvm"; return 1; }
	rm -f /run/iod-py.in /run/iod-py.out
	mkfifo /run/iod-py.in /run/iod-py.out || return 1
	IOD_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket \
		"$mockvm" "$py_vm" "$vm_size" </run/iod-py.in >/run/iod-py.out &
	exec 5>/run/iod-py.in
	exec 6</run/iod-py.out
	py_mockvm=1
	read -r word py_path _ <&6
	[ "$word" = ready ] || { log "python-client: mockvm did not adopt: '$word $py_path'"; return 1; }

	# Two regions with a gap: [0, 1 MiB) and [2 MiB, 4 MiB) of the device's memory. The
	# Python client declares them, starts tracking and harvests: nothing is dirty yet.
	py_round --region "$vm_base:0x100000" --region "$((vm_base + 2097152)):0x200000" \
		--start || return 1
	same "the first round" "$py_dirty" "" || return 1

	# Runs at a region's start and end, across a 64-bit word, in both regions.
	set -- 0 3 253952 4 2097152 1 2617344 2 4190208 1
	pymark "$@" || return 1
	py_round --keep || return 1
	same "the Python reader" "$py_dirty" "$(runs "$@")" || return 1
	same "the Python reader's regions" "$py_regions" \
		"$(printf '0x%x 0x100000 7\n0x%x 0x200000 4' "$vm_base" $((vm_base + 2097152)))" ||
		return 1
	# The same round, still pending, read by the C readers: iodirtyctl maps the memfd
	# through libiodirty's reader (dirty pages per region); HarvestRanges is the daemon's.
	# peek starts no round and clears nothing.
	c=$(iodirtyctl harvest --peek "$py_vm") || return 1
	same "iodirtyctl's log reader" "$(echo "$c" | awk '/^0x/ { print $1, $2, $3 }')" \
		"$py_regions" || return 1
	c=$(iodirtyctl harvest --peek --ranges "$py_vm") || return 1
	same "HarvestRanges" "$(echo "$c" | awk '/^0x/ { print $1, $2 }')" "$py_dirty" || return 1
	call "$py_path" org.iodirty.Session1 Acknowledge t "$py_rnd" || return 1
	log "python-client: round $py_rnd: Python, iodirtyctl and HarvestRanges agree"

	# A whole word of one region; the Python client acknowledges, and nothing comes back.
	set -- 819200 1 2359296 64
	pymark "$@" || return 1
	py_round || return 1
	same "the Python reader" "$py_dirty" "$(runs "$@")" || return 1
	c=$(iodirtyctl harvest --ranges "$py_vm") || return 1
	if ! echo "$c" | grep -q 'Dirty pages: 0$'; then
		log "python-client: the round the Python client acknowledged came back:"
		echo "$c" | sed 's/^/guest-systemd:     /'
		return 1
	fi
}
py_mockvm=0
t_python
result python-client $?
[ $py_mockvm -eq 1 ] && echo quit >&5
call "$obj" "$mgr" DestroySession s "$py_vm" >/dev/null 2>&1

if [ $rc_adopt -eq 0 ]; then
	echo quit >&7
	call "$obj" "$mgr" DestroySession s "$vm" >/dev/null 2>&1
fi

call "$obj" "$mgr" DestroySession s "$session" >/dev/null 2>&1
rm -f "$memfile"
log "done at $(cut -d' ' -f1 /proc/uptime)s of uptime"
say 'done'
systemctl --force --force reboot
