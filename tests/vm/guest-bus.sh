# Sourced by the guest's daemon tests: a private system-like bus (guest-bus.conf) and
# iodirtyd on it.
#   iod_bus_start [IODIRTYD ARGS...]   sets IOD_BUS_ADDRESS (exported), IOD_RUN, the pids
#   iod_bus_stop                       SIGTERM: the daemon must exit 0; returns its status
#   iod_bus_log                        prints the daemon's log
IOD_RUN=
IOD_DBUS_PID=
IOD_DAEMON_PID=

iod_bus_start() {
	IOD_RUN=$(mktemp -d /tmp/iodirty-bus.XXXXXX) || return 1
	sed -e "s|@RUNDIR@|$IOD_RUN|g" /iodirty/guest-bus.conf >"$IOD_RUN/bus.conf"
	dbus-daemon --config-file="$IOD_RUN/bus.conf" --nofork --print-address=3 \
		3>"$IOD_RUN/address" 2>"$IOD_RUN/dbus.log" &
	IOD_DBUS_PID=$!
	i=0
	while [ ! -s "$IOD_RUN/address" ] && [ $i -lt 200 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	IOD_BUS_ADDRESS=$(head -n1 "$IOD_RUN/address")
	if [ -z "$IOD_BUS_ADDRESS" ]; then
		echo "guest-bus: dbus-daemon did not start:"
		cat "$IOD_RUN/dbus.log"
		return 1
	fi
	export IOD_BUS_ADDRESS

	iodirtyd --bus-address="$IOD_BUS_ADDRESS" --log-level=debug "$@" 2>"$IOD_RUN/daemon.log" &
	IOD_DAEMON_PID=$!
	i=0
	until busctl --address="$IOD_BUS_ADDRESS" call org.freedesktop.DBus /org/freedesktop/DBus \
		org.freedesktop.DBus NameHasOwner s org.iodirty.Tracker1 2>&1 | grep -q 'b true'; do
		i=$((i + 1))
		if [ $i -ge 200 ] || ! kill -0 "$IOD_DAEMON_PID" 2>/dev/null; then
			echo "guest-bus: iodirtyd did not acquire org.iodirty.Tracker1:"
			busctl --address="$IOD_BUS_ADDRESS" call org.freedesktop.DBus /org/freedesktop/DBus \
				org.freedesktop.DBus NameHasOwner s org.iodirty.Tracker1
			cat "$IOD_RUN/daemon.log"
			return 1
		fi
		sleep 0.05
	done
	echo "guest-bus: iodirtyd (pid $IOD_DAEMON_PID) on $IOD_BUS_ADDRESS"
}

iod_bus_log() {
	[ -n "$IOD_RUN" ] && cat "$IOD_RUN/daemon.log"
}

# (its variables are prefixed: sh has no locals, and callers keep their own rc)
iod_bus_stop() {
	_iod_stop_rc=0
	if [ -n "$IOD_DAEMON_PID" ]; then
		kill -TERM "$IOD_DAEMON_PID" 2>/dev/null
		wait "$IOD_DAEMON_PID"
		_iod_stop_rc=$?
		IOD_DAEMON_PID=
		[ $_iod_stop_rc -eq 0 ] || echo "guest-bus: iodirtyd exited $_iod_stop_rc after SIGTERM"
	fi
	if [ -n "$IOD_DBUS_PID" ]; then
		kill -TERM "$IOD_DBUS_PID" 2>/dev/null
		wait "$IOD_DBUS_PID" 2>/dev/null
		IOD_DBUS_PID=
	fi
	return $_iod_stop_rc
}
