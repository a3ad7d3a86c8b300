#!/usr/bin/env python3
"""Mean and range of every numeric figure per run name in a bench/run-all.sh results file.

usage: bench/summarize.py RESULTS_FILE [RUN...]

Prints, for each run name, the number of repetitions, then one line per figure:
`name: mean (min-max)`. Lines whose result is missing are counted as failed runs.
"""
import re
import sys
from collections import OrderedDict


def parse(line):
    fields = {}
    for tok in line.split():
        if "=" not in tok:
            continue
        k, v = tok.split("=", 1)
        v = v.rstrip("%s,")
        if k in fields:
            # load.sh's and the result's keys may collide (successful=, failed=): keep the first.
            continue
        fields[k] = v
    m = re.search(r"cpu_per_call_second=([0-9.]+)ms", line)
    if m:
        fields["loadsh_cpu_ms_per_call_s"] = m.group(1)
    return fields


def main():
    path = sys.argv[1]
    only = set(sys.argv[2:])
    runs = OrderedDict()
    for line in open(path):
        if not line.startswith("run="):
            continue
        f = parse(line)
        if only and f["run"] not in only:
            continue
        runs.setdefault(f["run"], []).append((f, "NO RESULT" not in line))
    for name, reps in runs.items():
        ok = [f for f, good in reps if good]
        print(f"## {name}: {len(ok)} runs ({len(reps) - len(ok)} without result)")
        loads = [f.get("load1_before", "?") for f, _ in reps]
        print(f"   load1 before each: {' '.join(loads)}")
        keys = []
        for f in ok:
            for k in f:
                if k not in keys:
                    keys.append(k)
        for k in keys:
            vals = []
            for f in ok:
                try:
                    vals.append(float(f[k]))
                except (KeyError, ValueError):
                    pass
            if not vals or k in ("rep", "load1_before"):
                continue
            mean = sum(vals) / len(vals)
            print(f"   {k}: {mean:.6g} ({min(vals):.6g}-{max(vals):.6g})")


if __name__ == "__main__":
    main()
