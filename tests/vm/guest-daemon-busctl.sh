#!/bin/sh
# iodirtyd driven by hand, the way an operator would: busctl and iodirtyctl on the guest's
# private bus, every command and its output printed (the log is a transcript), every answer
# checked. busctl cannot pass fds, so in the mock shape mockvm makes the adopt-mode call and
# then marks pages dirty on request; in the vfio shape the edu device is attached by its PCI
# address (owner mode, fallback tracking).
#   guest-daemon-busctl.sh mock|vfio
. /iodirty/guest-bus.sh
shape=$1
fails=0

iod_bus_start || exit 1
B="busctl --address=$IOD_BUS_ADDRESS"
C="iodirtyctl --address=$IOD_BUS_ADDRESS"
T=org.iodirty.Tracker1
M="/org/iodirty/Tracker1 org.iodirty.Manager1"

# run COMMAND...: print it and its output; OUT holds the output, the status is the command's
run() {
	echo "\$ $*" | sed "s|--address=[^ ]*|--address=\$BUS|g"
	OUT=$("$@" 2>&1)
	rc=$?
	[ -n "$OUT" ] && echo "$OUT"
	return $rc
}
ok() { echo "ok: $1"; }
bad() {
	echo "not ok: $1${2:+ ($2)}"
	fails=$((fails + 1))
}
# expect NAME PATTERN COMMAND...: the command succeeds and its output matches the ERE
expect() {
	name=$1 pattern=$2
	shift 2
	if run "$@" && echo "$OUT" | grep -q -E -- "$pattern"; then ok "$name"; else bad "$name" "want /$pattern/"; fi
}

# contract_interface FILE IFACE: one interface of an introspection document, without
# comments, indentation or blank lines (the same normal form as tests/bus/run uses).
contract_interface() {
	awk -v iface="$2" '
		{ doc = doc $0 "\n" }
		END {
			while ((i = index(doc, "<!--")) > 0) {
				j = index(substr(doc, i), "-->")
				if (!j) exit 1
				doc = substr(doc, 1, i - 1) substr(doc, i + j + 2)
			}
			start = index(doc, "<interface name=\"" iface "\">")
			if (!start) exit 1
			rest = substr(doc, start)
			n = split(substr(rest, 1, index(rest, "</interface>") + 11), line, "\n")
			for (k = 1; k <= n; k++) {
				l = line[k]
				sub(/^[ \t]+/, "", l)
				if (l != "") print l
			}
		}' "$1"
}

expect "iodirtyctl status" 'iommufd: true' $C status

if [ "$shape" = mock ]; then
	S=/org/iodirty/Tracker1/session/vm1
	SI="$S org.iodirty.Session1"
	mkfifo "$IOD_RUN/vmm.in"
	mockvm vm1 0x400000 <"$IOD_RUN/vmm.in" >"$IOD_RUN/vmm.out" 2>&1 &
	VMM_PID=$!
	exec 3>"$IOD_RUN/vmm.in"
	i=0
	until grep -q '^ready' "$IOD_RUN/vmm.out" || [ $i -ge 100 ]; do sleep 0.1; i=$((i + 1)); done
	echo "\$ mockvm vm1 0x400000   # adopt mode: AdoptSession with its iommufd, then waits"
	cat "$IOD_RUN/vmm.out"
	grep -q "^ready $S " "$IOD_RUN/vmm.out" && ok "mockvm adopted its iommufd as session vm1" || bad "mockvm"
	mark() { # OFFSET PAGES -> the mock marks 2 IOPTEs per 4 KiB page
		n=$(wc -l <"$IOD_RUN/vmm.out")
		echo "mark $1 $2" >&3
		i=0
		until [ "$(wc -l <"$IOD_RUN/vmm.out")" -gt "$n" ] || [ $i -ge 100 ]; do sleep 0.05; i=$((i + 1)); done
		echo "\$ mockvm: mark $1 $2   # the mock device writes $2 page(s) at IOVA 0x1000000 + $1"
		tail -n 1 "$IOD_RUN/vmm.out"
		tail -n 1 "$IOD_RUN/vmm.out" | grep -q "^marked $(($2 * 2))$" && ok "mark $1 $2" || bad "mark $1 $2"
	}

	expect "ListSessions" '"vm1" "/org/iodirty/Tracker1/session/vm1" "idle" 0' $B call $T $M ListSessions
	expect "AddRegion" '^$' $B call $T $SI AddRegion tt 0x1000000 0x400000
	expect "Mode" '"adopt"' $B get-property $T $SI Mode
	expect "Hwpts" '^a\(ubbu\) 1 [0-9]+ true false 0$' $B get-property $T $SI Hwpts
	expect "Start" '^$' $B call $T $SI Start
	expect "Start again (idempotent)" '^$' $B call $T $SI Start
	expect "State" '"tracking"' $B get-property $T $SI State
	mark 0x3000 2
	mark 0x100000 1
	expect "HarvestRanges: exactly the marked pages" \
		'^ta\(tt\)btbt 1 2 16789504 8192 17825792 4096 false 3 true [0-9]+$' \
		$B call $T $SI HarvestRanges 'a{sv}' 0
	expect "HarvestRanges leaves the round pending" '^t 1$' $B get-property $T $SI PendingRound
	expect "Acknowledge the ranges' round" '^$' $B call $T $SI Acknowledge t 1
	mark 0x3ff000 1
	expect "iodirtyctl harvest --ranges --json" '"start":20967424' $C --json harvest --ranges vm1
	mark 0x200000 1
	expect "iodirtyctl harvest" 'Dirty pages: 1$' $C harvest vm1
	mark 0x0 1
	expect "Harvest (the log memfd)" '^thtbt 4 [0-9]+ 1 true [0-9]+$' $B call $T $SI Harvest 'a{sv}' 0
	expect "PendingRound" '^t 4$' $B get-property $T $SI PendingRound
	expect "Acknowledge" '^$' $B call $T $SI Acknowledge t 4
	expect "Harvest: nothing new" '^thtbt 5 [0-9]+ 0 true [0-9]+$' $B call $T $SI Harvest 'a{sv}' 0
	expect "Stop" '^$' $B call $T $SI Stop
	expect "iodirtyctl session" 'Mode: adopt' $C session vm1
	echo quit >&3
	exec 3>&-
	wait $VMM_PID
	i=0
	until $B get-property $T $SI State 2>/dev/null | grep -q orphaned || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done
	expect "the VMM left: orphaned (policy keep)" '"orphaned"' $B get-property $T $SI State
	expect "iodirtyctl sessions" 'vm1 +orphaned' $C sessions
	expect "iodirtyctl destroy" '' $C destroy vm1
	expect "ListSessions: none" '^a\(sosu\) 0$' $B call $T $M ListSessions
else
	S=/org/iodirty/Tracker1/session/edu
	SI="$S org.iodirty.Session1"
	expect "iodirtyctl probe" 'intel-vtd' $C probe "$IOD_EDU_PCI"
	expect "CreateSession" "^o \"$S\"$" $B call $T $M CreateSession 'sa{sv}' edu 1 disconnect_policy s keep
	expect "AttachDevice by PCI address" "^o \"$S/device/0\"$" $B call $T $SI AttachDevice 'sa{sv}' "$IOD_EDU_PCI" 0
	expect "device IommuType" '"intel-vtd"' $B get-property $T "$S/device/0" org.iodirty.Device1 IommuType
	expect "device TrackingMode" '"fallback"' $B get-property $T "$S/device/0" org.iodirty.Device1 TrackingMode
	# The host's bus tier has no device object: the contract of Device1 is checked here.
	if $B introspect --xml-interface $T "$S/device/0" >/tmp/device.xml 2>&1 &&
		contract_interface /tmp/device.xml org.iodirty.Device1 >/tmp/device.live &&
		contract_interface /iodirty/proto/org.iodirty.Tracker1.xml org.iodirty.Device1 >/tmp/device.proto &&
		[ -s /tmp/device.proto ] && diff -u /tmp/device.proto /tmp/device.live; then
		ok "introspection of org.iodirty.Device1 equals proto/org.iodirty.Tracker1.xml"
	else
		bad "introspection of org.iodirty.Device1 equals proto/org.iodirty.Tracker1.xml"
	fi
	expect "TrackingMode" '"fallback"' $B get-property $T $SI TrackingMode
	expect "Precise" 'b false' $B get-property $T $SI Precise
	expect "iodirtyctl devices" "$IOD_EDU_PCI" $C devices edu
	expect "Start" '^$' $B call $T $SI Start
	expect "Harvest: no memory yet, imprecise" '^thtbt 1 [0-9]+ 0 false [0-9]+$' $B call $T $SI Harvest 'a{sv}' 0
	expect "Acknowledge" '^$' $B call $T $SI Acknowledge t 1
	expect "iodirtyctl harvest" 'Precise: no' $C harvest edu
	expect "Stop" '^$' $B call $T $SI Stop
	expect "DetachDevice" '^$' $B call $T $SI DetachDevice o "$S/device/0"
	expect "Devices: none" '^ao 0$' $B get-property $T $SI Devices
	expect "iodirtyctl destroy" '' $C destroy edu
	expect "ListSessions: none" '^a\(sosu\) 0$' $B call $T $M ListSessions
fi

iod_bus_stop || bad "iodirtyd exits 0 on SIGTERM"
if [ $fails -ne 0 ]; then
	echo "--- iodirtyd log ---"
	tail -n 60 "$IOD_RUN/daemon.log"
fi
echo "guest-daemon-busctl: $fails failed"
[ $fails -eq 0 ]
