#!/bin/sh
# The reference migration in the guest: iodirtyd on a private bus (guest-bus.sh), then
#   guest-migrate.sh COMMAND [ARGS...]      run COMMAND against it (IOD_BUS_ADDRESS is set)
#   guest-migrate.sh restart retry|abort    restart iodirtyd (SIGTERM) under a running
#       iodirty-migrate. iodirtyd runs under fdstore-harness, which keeps its fd store and
#       starts it again, as systemd does: with retry the session survives and the migration
#       must finish verified; with abort it must stop with exit 4 and say why. Either way
#       it must never finish "successfully" with a destination it could not complete.
#   guest-migrate.sh stream-edu [ARGS...]   the edu device's migration as a stream into
#       iodirty-migrate --receive, which checks the source's checksum
. /iodirty/guest-bus.sh

# A private bus (guest-bus.conf) and iodirtyd on it; ready when iodirtyctl gets an answer.
mig_bus_start() {
	IOD_RUN=$(mktemp -d /tmp/iodirty-mig.XXXXXX) || return 1
	sed -e "s|@RUNDIR@|$IOD_RUN|g" /iodirty/guest-bus.conf >"$IOD_RUN/bus.conf"
	dbus-daemon --config-file="$IOD_RUN/bus.conf" --nofork --print-address=3 \
		3>"$IOD_RUN/address" 2>"$IOD_RUN/dbus.log" &
	IOD_DBUS_PID=$!
	i=0
	while [ ! -s "$IOD_RUN/address" ] && [ $i -lt 600 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	IOD_BUS_ADDRESS=$(head -n1 "$IOD_RUN/address")
	[ -n "$IOD_BUS_ADDRESS" ] || { cat "$IOD_RUN/dbus.log"; return 1; }
	export IOD_BUS_ADDRESS
	if [ "${1:-}" = harness ]; then
		# IOD_DAEMON_PID is the harness: SIGTERM to it stops the daemon for good
		fdstore-harness --control="$IOD_RUN/harness" -- \
			iodirtyd --bus-address="$IOD_BUS_ADDRESS" --log-level=info 2>"$IOD_RUN/daemon.log" &
	else
		iodirtyd --bus-address="$IOD_BUS_ADDRESS" --log-level=info 2>"$IOD_RUN/daemon.log" &
	fi
	IOD_DAEMON_PID=$!
	mig_wait_daemon
}

mig_wait_daemon() {
	i=0
	until iodirtyctl --address="$IOD_BUS_ADDRESS" status >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -ge 600 ] || ! kill -0 "$IOD_DAEMON_PID" 2>/dev/null; then
			echo "guest-migrate: iodirtyd did not answer on $IOD_BUS_ADDRESS:"
			cat "$IOD_RUN/daemon.log"
			return 1
		fi
		sleep 0.05
	done
}

case $1 in
restart) mig_bus_start harness || exit 1 ;;
*) mig_bus_start || exit 1 ;;
esac
status=0
case $1 in
restart)
	policy=$2
	out=/tmp/migrate-restart.out
	test-migrate demo-mock --max-bandwidth=4M --verify --quiet \
		--on-daemon-restart="$policy" --restart-timeout=15 >"$out" 2>&1 &
	mpid=$!
	# Stop the daemon once the migration is under way (its first round harvested), not
	# after a fixed time: on a loaded host the set-up alone can take seconds.
	i=0
	until iodirtyctl --address="$IOD_BUS_ADDRESS" --json session demo-mock 2>/dev/null |
		grep -q -E '"rounds": ?[1-9]'; do
		i=$((i + 1))
		[ $i -ge 1200 ] || ! kill -0 "$mpid" 2>/dev/null && break
		sleep 0.05
	done
	if ! kill -0 "$mpid" 2>/dev/null; then
		cat "$out"
		echo "FAIL: the migration ended before iodirtyd was stopped: nothing was tested"
		iod_bus_stop
		exit 1
	fi
	old=$(pidof iodirtyd)
	echo "restart: stopping iodirtyd while the migration runs; the harness starts it again"
	kill -TERM $old
	i=0
	while kill -0 $old 2>/dev/null && [ $i -lt 600 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	mig_wait_daemon || status=1
	echo "restart: iodirtyd is running again (pid $(pidof iodirtyd), was $old)"
	wait "$mpid"
	mrc=$?
	cat "$out"
	if [ "$policy" = retry ] && [ $mrc -eq 0 ] && grep -q 'iodirtyd is back' "$out" &&
		grep -q 'destination equals the source' "$out"; then
		echo "PASS: the session survived the restart and the migration completed verified"
	elif [ "$policy" = abort ] && [ $mrc -eq 4 ] && grep -q 'iodirtyd went away' "$out"; then
		echo "PASS: iodirty-migrate stopped cleanly with exit 4 (policy $policy) and said why"
	else
		echo "FAIL: iodirty-migrate exited $mrc (policy $policy)"
		status=1
	fi
	;;
stream-edu)
	# the edu device's migration over a pipe to a receiving iodirty-migrate
	shift
	rm -f /tmp/edu.fifo
	mkfifo /tmp/edu.fifo
	iodirty-migrate --receive=/tmp/edu.img </tmp/edu.fifo &
	rpid=$!
	test-migrate demo-edu --dest=- --verify "$@" >/tmp/edu.fifo
	src=$?
	wait $rpid
	dst=$?
	rm -f /tmp/edu.fifo /tmp/edu.img
	echo "sender exited $src, receiver exited $dst"
	[ $src -eq 0 ] && [ $dst -eq 0 ] || status=1
	;;
*)
	"$@"
	status=$?
	;;
esac
if [ $status -ne 0 ]; then
	echo "--- iodirtyd log (tail) ---"
	iod_bus_log | tail -40
fi
iod_bus_stop || status=1
exit $status
