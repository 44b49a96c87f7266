#!/usr/bin/env python3
"""Prints criterion's estimates as a table with each row's ratio to the group's first peer.

Usage: bench-ratios.py TARGET/criterion
Reads GROUP/PEER/NAME/new/estimates.json (mean point estimate, ns) for the groups the
memory bench writes; the baseline of each group is the bare map (`quick_cache`).
"""
import json
import pathlib
import sys

BASELINE = "quick_cache"


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    if not root.is_dir():
        print(f"no criterion results under {root}; run the bench first", file=sys.stderr)
        return 1
    print(f"{'group':10} {'peer':12} {'call':22} {'ns/op':>9} {'vs bare map':>12}")
    for group in ("get_hit", "get_miss", "set", "incr"):
        rows = []
        for est in sorted((root / group).glob("*/*/new/estimates.json")):
            peer, call = est.parent.parent.parent.name, est.parent.parent.name
            ns = json.loads(est.read_text())["mean"]["point_estimate"]
            rows.append((peer, call, ns))
        base = next((ns for peer, _, ns in rows if peer == BASELINE), None)
        for peer, call, ns in rows:
            ratio = f"{ns / base:.2f}x" if base else "-"
            print(f"{group:10} {peer:12} {call.replace('__', '::').replace('_', ' '):22} {ns:9.1f} {ratio:>12}")
    # The security bench: each row against `plain` (values stored as given) of its size.
    secured = [root / g for g in ("security_get", "security_set") if (root / g).is_dir()]
    if secured:
        print(f"\n{'group':13} {'peer':18} {'value':8} {'ns/op':>9} {'vs plain':>9}")
    for group in secured:
        rows = {}
        for est in sorted(group.glob("*/*/new/estimates.json")):
            peer, size = est.parent.parent.parent.name, est.parent.parent.name
            rows[(peer, size)] = json.loads(est.read_text())["mean"]["point_estimate"]
        for (peer, size), ns in sorted(rows.items(), key=lambda r: (r[0][1], r[1])):
            base = rows.get(("plain", size))
            ratio = f"{ns / base:.2f}x" if base else "-"
            print(f"{group.name:13} {peer:18} {size.replace('_', ' '):8} {ns:9.1f} {ratio:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
