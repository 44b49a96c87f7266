"""Instructions per `get` hit, counted by callgrind: polycache against cachebox and the floor.

Each subject runs in a fresh interpreter under `valgrind --tool=callgrind`, once with N calls
of `get(key)` in a function's loop and once with none; the same for a loop that does nothing.
The figure is (subject at N - subject at 0 - (empty at N - empty at 0)) / N: the instructions
of one call, without start-up, imports or the loop itself. `PYTHONHASHSEED=0` keeps the
imports' hashing the same in every run (docs/backends/memory.md, "Where a Python `get` goes").

Subjects: `polycache.Cache("memory://")` and `polycache.django.Cache`, `cachebox.LRUCache`,
`dict.get`, and, when the wheel is built with the cargo feature `bench-floor`
(`POLYCACHE_FEATURES=bench-floor bash scripts/python-test.sh --build-only`), `_GetFloor`: the
least a bytes-storing, TTL-aware store shareable with C must do per Python `get`.

`--set` counts `set(key, value)` (cachebox: `insert`) of the same key instead, on the
subjects that have one. `--rotate` counts hits on ROTATE keys in turn, each with a value of
its own, more than the table of shared decoded objects holds, so most hits decode
(the empty loop walks the same list of keys). `--miss` counts `get` of a key that is absent. `--functions` also prints, per subject, the instructions per call of
each function (self cost, `callgrind_annotate`, the run at N minus the run at 0), for the
stage tables of docs/backends/memory.md.

Run: .venv/bin/python bench/python/get_instructions.py [N] [--set | --rotate | --miss] [--functions]
     [subject ...]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Any

VALUE = "abcdefghijklmnop"  # 16 bytes
KEY = "hit-key"
MISSING = "miss-key"
# More keys than the table of shared decoded objects has slots (python/src/serializer.rs).
ROTATE = 20_000


def rotate_items() -> list[tuple[str, str]]:
    """ROTATE keys, each with a 16-byte value of its own."""
    return [(f"rotate-{i:06d}", f"value-{i:010d}") for i in range(ROTATE)]


def subject(name: str) -> Any:
    """The bound `get` of a store holding VALUE under KEY."""
    if name == "polycache":
        import polycache

        c: Any = polycache.Cache("memory://?max_entries=100000")
    elif name == "django":
        from django.conf import settings

        settings.configure()
        import polycache.django

        c = polycache.django.Cache("memory://", {"TIMEOUT": 300})
    elif name == "cachebox":
        import cachebox

        c = cachebox.LRUCache(100_000)
    elif name == "dict":
        c = {}
        c[KEY] = VALUE
        return c.get
    elif name == "floor":
        from polycache import _polycache

        c = _polycache._GetFloor()  # type: ignore[attr-defined]
    elif name == "empty":
        return None
    else:
        raise SystemExit(f"unknown subject {name!r}")
    if name == "cachebox":
        c.insert(KEY, VALUE)
    else:
        c.set(KEY, VALUE)
    get = c.get
    assert get(KEY) == VALUE
    return get


def child(name: str, n: int, op: str) -> None:
    get = subject(name)
    if op == "rotate":
        items = rotate_items()
        if get is not None:
            store = getattr(get, "__self__", None)
            for k, v in items:
                if name == "dict":
                    store[k] = v  # type: ignore[index]
                elif name == "cachebox":
                    store.insert(k, v)  # type: ignore[union-attr]
                else:
                    store.set(k, v)  # type: ignore[union-attr]
        # The same list of n keys for every subject, the empty loop included.
        keys = [items[i % ROTATE][0] for i in range(n)]
        assert get is None or not keys or get(keys[-1]) is not None

        def loop(n: int) -> None:
            if get is None:
                for _ in keys:
                    pass
            else:
                for k in keys:
                    get(k)

        loop(n)
        return
    if get is None:

        def loop(n: int) -> None:
            for _ in range(n):
                pass

    elif op == "set":
        store = get.__self__
        put = store.insert if name == "cachebox" else store.set

        def loop(n: int) -> None:
            for _ in range(n):
                put(KEY, VALUE)

    else:
        key = MISSING if op == "miss" else KEY
        assert (get(key) is None) == (op == "miss")

        def loop(n: int) -> None:
            for _ in range(n):
                get(key)

    loop(n)


def instructions(name: str, n: int, op: str = "get", functions: dict[str, int] | None = None) -> int:
    """The run's total; with `functions`, also fills it with each function's self cost."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--child", name, str(n), op],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with open(out) as f:
            text = f.read()
        m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        assert m, "no totals in callgrind's output"
        if functions is not None:
            report = subprocess.run(
                ["callgrind_annotate", "--inclusive=no", "--threshold=100", out],
                check=True, capture_output=True, text=True,
            ).stdout
            for line in report.splitlines():
                row = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.+)$", line)
                if row and "PROGRAM TOTALS" not in row.group(2):
                    cost = int(row.group(1).replace(",", ""))
                    fn = re.sub(r"^[^:]*:", "", row.group(2), count=1).strip()
                    functions[fn] = functions.get(fn, 0) + cost
        return int(m.group(1))


def function_costs(name: str, n: int, op: str) -> dict[str, int]:
    """Each function's self cost in the run at `n` minus the run at 0."""
    at_n: dict[str, int] = {}
    at_0: dict[str, int] = {}
    instructions(name, n, op, at_n)
    instructions(name, 0, op, at_0)
    return {fn: cost - at_0.get(fn, 0) for fn, cost in at_n.items()}


def per_function(name: str, n: int, op: str, empty: dict[str, int]) -> None:
    """Prints the functions costing at least half an instruction per call of `name`, the
    empty loop's cost of each taken off."""
    costs = function_costs(name, n, op)
    at_n = list(costs)
    rows = [(costs[fn] - empty.get(fn, 0)) / n for fn in at_n]
    for per, fn in sorted(zip(rows, at_n), reverse=True):
        if per >= 0.5:
            print(f"    {per:8.1f}  {fn[:150]}")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--child"]:
        child(args[1], int(args[2]), args[3])
        return
    modes = {"--set": "set", "--rotate": "rotate", "--miss": "miss"}
    chosen = [modes[a] for a in args if a in modes]
    if len(chosen) > 1:
        raise SystemExit("choose one of --set, --rotate, --miss")
    op = chosen[0] if chosen else "get"
    functions = "--functions" in args
    args = [a for a in args if a not in modes and a != "--functions"]
    n = int(args[0]) if args and args[0].isdigit() else 200_000
    names = [a for a in args if not a.isdigit()] or ["polycache", "django", "cachebox", "dict", "floor"]
    empty = instructions("empty", n, op) - instructions("empty", 0, op)
    empty_functions = function_costs("empty", n, op) if functions else {}
    for name in names:
        try:
            per = (instructions(name, n, op) - instructions(name, 0, op) - empty) / n
        except subprocess.CalledProcessError:
            print(f"{name:10} (not available in this build)")
            continue
        what = {"get": "get hit", "set": "set", "rotate": f"get hit over {ROTATE:,} keys", "miss": "get miss"}[op]
        print(f"{name:10} {per:8.1f} instructions per {what}")
        if functions:
            per_function(name, n, op, empty_functions)


if __name__ == "__main__":
    main()
