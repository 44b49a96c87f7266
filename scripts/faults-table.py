#!/usr/bin/env python3
"""Turns the FAULTS-ROW and LOAD-ROW lines of a fault or load run into Markdown tables.

Usage: cargo test -p polycache --test faults -- --nocapture | python3 scripts/faults-table.py
"""

import sys

FAULTS_HEAD = (
    "| backend | fault | failing | operations | errors raised | wrong values "
    "| slowest operation | bound | `incr` total in [acknowledged, + ambiguous] "
    "| answering again after |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)
LOAD_HEAD = (
    "| backend | operations | threads | time | throughput | slowest operation |\n"
    "|---|---|---|---|---|---|"
)


def main() -> int:
    faults, load = [], []
    for line in sys.stdin:
        # A row may follow the harness's "test name ... " on the same line.
        line = line.rstrip("\n")
        for marker, rows in (("FAULTS-ROW ", faults), ("LOAD-ROW ", load)):
            if marker in line:
                rows.append(line[line.index(marker) + len(marker) :])
    if faults:
        print(FAULTS_HEAD)
        print("\n".join(faults))
    if faults and load:
        print()
    if load:
        print(LOAD_HEAD)
        print("\n".join(load))
    if not faults and not load:
        print("no FAULTS-ROW or LOAD-ROW lines in the input", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
