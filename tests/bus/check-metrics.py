#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Check the output of 'iodirtyctl metrics' with real parsers (bus tier, tests/bus/run).

    check-metrics.py OPENMETRICS_FILE EXPECT_FILE [PROMETHEUS_FILE]
    check-metrics.py --escape OUT

The second form checks OUT.om and OUT.prom from test-metrics-escape: label values with a
backslash, a double quote, a newline and UTF-8, and a state the writer does not know.

OPENMETRICS_FILE is parsed with prometheus_client's OpenMetrics parser (which refuses
anything OpenMetrics 1.0 does not allow: a missing "# EOF", a unit that is not the name's
suffix, interleaved families, a counter sample without "_total", ...); PROMETHEUS_FILE, the
--format=prometheus output, with its Prometheus text format parser, and it must carry the
same samples. EXPECT_FILE holds what tests/bus/run read over D-Bus, one sample a line:

    NAME LABELS VALUE

LABELS is "-" or k=v,k=v (the exact label set); VALUE a number, or "absent" for a sample
that must not be there. Prints one PASS/FAIL line per check, which tests/bus/run counts.
"""
import math
import re
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as prom_parse

failed = 0


def result(ok, name, detail=""):
    global failed
    if ok:
        print(f"PASS: metrics: {name}")
    else:
        failed += 1
        print(f"FAIL: metrics: {name}" + (f" ({detail})" if detail else ""))


def samples_of(families):
    out = {}
    for f in families:
        for s in f.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def main():
    om_file, expect_file = sys.argv[1], sys.argv[2]
    prom_file = sys.argv[3] if len(sys.argv) > 3 else None
    with open(om_file, encoding="utf-8") as f:
        om_text = f.read()
    try:
        families = list(om_parse(om_text))
    except ValueError as e:
        result(False, "the OpenMetrics parser accepts the output", str(e))
        return
    result(True, f"the OpenMetrics parser accepts the output ({len(families)} families)")

    # The rules OpenMetrics leaves to the exposer, as metrics.c promises them.
    problems = []
    for f in families:
        if not f.name.startswith("iodirty_"):
            problems.append(f"{f.name}: not in the iodirty_ namespace")
        if not f.documentation:
            problems.append(f"{f.name}: no HELP")
        if re.search(r"_(bytes|seconds)$", f.name) and not f.unit:
            problems.append(f"{f.name}: no UNIT")
        if f.type not in ("gauge", "counter", "info", "stateset"):
            problems.append(f"{f.name}: type {f.type}")
        for s in f.samples:
            if f.name.startswith("iodirty_session") and "session" not in s.labels:
                problems.append(f"{s.name}: no session label")
            if f.type == "counter" and not s.name.endswith("_total"):
                problems.append(f"{s.name}: a counter sample without _total")
    result(not problems, "families have HELP, UNIT where due, session labels", "; ".join(problems))
    result(om_text.endswith("# EOF\n"), "the text ends with # EOF")

    got = samples_of(families)
    with open(expect_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, labels, value = line.split()
            key = (name, tuple(sorted(
                tuple(kv.split("=", 1)) for kv in ([] if labels == "-" else labels.split(",")))))
            what = f"{name}{{{'' if labels == '-' else labels}}}"
            if value == "absent":
                result(key not in got, f"{what} is absent", f"got {got.get(key)}")
            elif key not in got:
                result(False, f"{what} = {value}", "no such sample")
            else:
                want = float(value)
                ok = math.isclose(got[key], want, rel_tol=1e-12, abs_tol=1e-9)
                result(ok, f"{what} = {value}", f"got {got[key]!r}")

    if prom_file:
        with open(prom_file, encoding="utf-8") as f:
            prom_text = f.read()
        try:
            pfam = list(prom_parse(prom_text))
        except ValueError as e:
            result(False, "the Prometheus text parser accepts --format=prometheus", str(e))
            return
        result(True, "the Prometheus text parser accepts --format=prometheus")
        types = set(re.findall(r"^# TYPE \S+ (\S+)$", prom_text, re.M))
        result(types <= {"gauge", "counter"} and "# EOF" not in prom_text
               and "# UNIT" not in prom_text,
               "--format=prometheus has only gauge and counter types, no UNIT, no EOF",
               f"types {sorted(types)}")
        pgot = samples_of(pfam)
        diff = set(pgot.items()) ^ set(got.items())
        result(not diff, "--format=prometheus carries the same samples as OpenMetrics",
               f"{len(diff)} differ: {sorted(diff)[:4]}")


def escape(out):
    name1 = 'vm"1\\x\ny'
    name2 = "gr\u00fc\u00dfe"
    version = '1.0 "quoted" back\\slash\nnewline'
    for suffix, parse in (("om", om_parse), ("prom", prom_parse)):
        with open(f"{out}.{suffix}", encoding="utf-8") as f:
            text = f.read()
        try:
            got = samples_of(parse(text))
        except ValueError as e:
            result(False, f"escaping ({suffix}): the parser accepts the text", str(e))
            continue
        result(True, f"escaping ({suffix}): the parser accepts the text")
        want = {
            ("iodirty_daemon_info", (("kernel_hole_behavior", "unknown"), ("version", version))): 1,
            ("iodirty_session_rounds_total", (("session", name1),)): 7,
            ("iodirty_session_rounds_total", (("session", name2),)): 0,
            ("iodirty_session_last_round_duration_seconds", (("session", name1),)): 1.234567,
            ("iodirty_session_last_round_timestamp_seconds", (("session", name1),)):
                1700000000.123456,
            ("iodirty_session_state", (("iodirty_session_state", "tracking"),
                                       ("session", name1))): 1,
            ("iodirty_session_state", (("iodirty_session_state", 'sleeping "newer"'),
                                       ("session", name2))): 1,
            ("iodirty_session_state", (("iodirty_session_state", "idle"),
                                       ("session", name2))): 0,
        }
        for key, value in want.items():
            ok = key in got and math.isclose(got[key], value, rel_tol=1e-15)
            result(ok, f"escaping ({suffix}): {key[0]}{dict(key[1])!r} = {value}",
                   f"got {got.get(key)!r}")
        absent = ("iodirty_session_last_round_timestamp_seconds", (("session", name2),))
        result(absent not in got, f"escaping ({suffix}): no timestamp for a session without a round")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--escape":
        escape(sys.argv[2])
        sys.exit(1 if failed else 0)
    main()
    sys.exit(1 if failed else 0)
