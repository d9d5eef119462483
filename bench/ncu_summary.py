#!/usr/bin/env python3
"""Where the GPU time goes: sums Nsight Compute's per-launch kernel durations by kernel.

    ncu --csv --metrics gpu__time_duration.sum PROGRAM ARGS > launches.csv
    python3 bench/ncu_summary.py launches.csv [--passes N] [--top K]

Groups launches by kernel name (templates shortened) and grid, prints count, total and mean time and the share
of the whole, largest first. --passes divides totals by the number of forward passes the program ran.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict

UNIT = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6}


def short(name: str) -> str:
    name = re.sub(r"\(.*", "", name)  # argument list
    depth, out = 0, []
    for ch in name:  # drop template arguments, keep the outer name
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out).replace("void ", "").strip()[:70]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv")
    parser.add_argument("--passes", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    rows = [line for line in open(args.csv, encoding="utf-8", errors="replace") if line.startswith('"')]
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for record in csv.DictReader(rows):
        if record.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = record["Metric Unit"]
        if unit not in UNIT:
            print(f"unknown time unit {unit!r}", file=sys.stderr)
            return 1
        value = float(record["Metric Value"].replace(",", "")) * UNIT[unit]
        key = (short(record["Kernel Name"]), record.get("Grid Size", ""))
        totals[key][0] += 1
        totals[key][1] += value
    whole = sum(t for _, t in totals.values())
    if not whole:
        print("no kernel durations found", file=sys.stderr)
        return 1
    print(f"{'kernel':70s} {'grid':>16s} {'count':>7s} {'us/pass':>10s} {'mean us':>9s} {'share':>6s}")
    for (name, grid), (count, total) in sorted(totals.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"{name:70s} {grid:>16s} {count / args.passes:7.0f} {total / args.passes:10.1f} {total / count:9.2f} {100 * total / whole:5.1f}%")
    print(f"{'all kernels':70s} {'':>16s} {sum(c for c, _ in totals.values()) / args.passes:7.0f} {whole / args.passes:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
