#!/bin/sh
# Run one guest test program against iodirtyd started by fdstore-harness, which plays the
# service manager's part of the notify protocol (fd store, restart, watchdog), on a private
# bus:  guest-fdstore.sh PROGRAM [ARGS...]
# The program finds the bus in IOD_BUS_ADDRESS and the harness's control socket in
# IOD_HARNESS; it ends the harness itself ("quit"). The daemon's log is printed when
# anything failed. IOD_WATCHDOG_USEC sets the watchdog (10 s by default).
run=$(mktemp -d /tmp/iodirty-fdstore.XXXXXX) || exit 1
sed -e "s|@RUNDIR@|$run|g" /iodirty/guest-bus.conf >"$run/bus.conf"
dbus-daemon --config-file="$run/bus.conf" --nofork --print-address=3 \
	3>"$run/address" 2>"$run/dbus.log" &
dbus_pid=$!
i=0
while [ ! -s "$run/address" ] && [ $i -lt 200 ]; do
	sleep 0.05
	i=$((i + 1))
done
IOD_BUS_ADDRESS=$(head -n1 "$run/address")
if [ -z "$IOD_BUS_ADDRESS" ]; then
	echo "guest-fdstore: dbus-daemon did not start:"
	cat "$run/dbus.log"
	exit 1
fi
export IOD_BUS_ADDRESS
export IOD_HARNESS="$run/harness"

fdstore-harness --control="$IOD_HARNESS" --watchdog-usec="${IOD_WATCHDOG_USEC:-10000000}" -- \
	iodirtyd --bus-address="$IOD_BUS_ADDRESS" --log-level=debug 2>"$run/daemon.log" &
harness_pid=$!
i=0
until [ -S "$IOD_HARNESS" ]; do
	i=$((i + 1))
	if [ $i -ge 200 ] || ! kill -0 "$harness_pid" 2>/dev/null; then
		echo "guest-fdstore: fdstore-harness did not start:"
		cat "$run/daemon.log"
		exit 1
	fi
	sleep 0.05
done

"$@"
rc=$?

# A program that told the harness to quit got its answer before the harness exits: it still
# closes the fds it stored (a device's close can take a while). Give it 30 s.
i=0
while [ $rc -eq 0 ] && [ $i -lt 600 ] && kill -0 "$harness_pid" 2>/dev/null; do
	sleep 0.05
	i=$((i + 1))
done
if kill -0 "$harness_pid" 2>/dev/null; then
	[ $rc -eq 0 ] && { echo "guest-fdstore: the program left the harness running"; rc=1; }
	kill -TERM "$harness_pid"
fi
wait "$harness_pid" 2>/dev/null
kill -TERM "$dbus_pid" 2>/dev/null
wait "$dbus_pid" 2>/dev/null
if [ $rc -ne 0 ] || grep -q -E 'AddressSanitizer|runtime error' "$run/daemon.log"; then
	echo "--- iodirtyd and harness log (last 120 lines) ---"
	tail -n 120 "$run/daemon.log"
	[ $rc -eq 0 ] && rc=1
fi
exit $rc
