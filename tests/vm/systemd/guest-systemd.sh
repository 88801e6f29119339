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
	for t in sandbox bus policy session watchdog fdstore-crash fdstore-restart; do
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
if [ $rc_adopt -eq 0 ]; then
	echo quit >&7
	call "$obj" "$mgr" DestroySession s "$vm" >/dev/null 2>&1
fi

call "$obj" "$mgr" DestroySession s "$session" >/dev/null 2>&1
rm -f "$memfile"
log "done at $(cut -d' ' -f1 /proc/uptime)s of uptime"
say 'done'
systemctl --force --force reboot
