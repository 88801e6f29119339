#!/bin/sh
# Run one guest test program against iodirtyd on a private bus:
#   guest-daemon.sh PROGRAM [ARGS...]
# The program finds the bus in IOD_BUS_ADDRESS. Passes when the program passes and the
# daemon then exits 0 on SIGTERM; the daemon's log is printed when anything failed.
. /iodirty/guest-bus.sh

iod_bus_start || exit 1
"$@"
rc=$?
iod_bus_stop || { [ $rc -eq 0 ] && rc=1; }
if [ $rc -ne 0 ] || grep -q -E 'AddressSanitizer|runtime error' "$IOD_RUN/daemon.log"; then
	echo "--- iodirtyd log (last 80 lines) ---"
	tail -n 80 "$IOD_RUN/daemon.log"
	[ $rc -eq 0 ] && rc=1
fi
exit $rc
