"""`get` hits and a `set` in time, every subject in turn for many rounds: the best round of each.

`bench_memory.py --quick` times each library once, one after the other, so a slow spell of
this shared machine lands on one library only. Here every subject runs 200,000 calls in turn,
ROUNDS times over, and the best round of each is kept (ns per call, the loop included), so
that a comparison of two subjects, or of two builds run back to back, holds up on a noisy
machine. The same 16-byte str value and 7-byte key as `get_instructions.py`.

"get, 10k keys" reads 10,000 resident keys in turn, each holding a 16-byte str of its own
(`bench_memory.py`'s "get hit, 10k keys" row): the keys' entries miss the CPU's caches, and
polycache decodes a new object on nearly every read (its table of shared objects keeps only
values read twice in a row, docs/backends/memory.md). The loop's `next(ks)` is included.

Subjects: `dict`, `cachebox.LRUCache`, `polycache.Cache("memory://")` (and with
`latency_histograms=off`, and with the entry stored without a TTL), a tiered cache whose
`memory://` L1 holds the key (over a `memory://` L2), `polycache.django.Cache`, and
`_GetFloor` when the wheel is built with the cargo feature `bench-floor`.

Run: .venv/bin/python bench/python/get_time.py [ROUNDS]
"""

from __future__ import annotations

import gc
import itertools
import sys
import timeit
from collections.abc import Callable
from urllib.parse import quote
from typing import Any

VALUE = "abcdefghijklmnop"  # 16 bytes
KEY = "hit-key"
CALLS = 200_000
RESIDENT = {f"resident-{i:07d}": f"value-{i:010d}" for i in range(10_000)}


def subjects() -> dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]]:
    """Per subject: its bound `get` (holding VALUE under KEY) and its `set`, if it has one."""
    import cachebox
    import polycache

    out: dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]] = {}
    d = {KEY: VALUE}
    out["dict"] = (d.get, d.__setitem__)
    lru = cachebox.LRUCache(100_000)
    lru.insert(KEY, VALUE)
    out["cachebox LRU"] = (lru.get, lru.insert)
    try:
        from polycache import _polycache

        floor = _polycache._GetFloor()  # type: ignore[attr-defined]
        floor.set(KEY, VALUE)
        out["floor"] = (floor.get, None)
    except AttributeError:
        pass
    for name, query, timeout in [
        ("polycache", "", 300),
        ("polycache, no histograms", "&latency_histograms=off", 300),
        ("polycache, no TTL", "", None),
    ]:
        c = polycache.Cache(f"memory://?max_entries=100000{query}")
        c.set(KEY, VALUE, timeout=timeout)
        out[name] = (c.get, c.set)
    l1, l2 = (quote(url, safe="") for url in ("memory://?max_entries=100000", "memory://get-time"))
    tiered = polycache.Cache(f"tiered://?l1={l1}&l2={l2}")
    tiered.set(KEY, VALUE)
    out["polycache tiered"] = (tiered.get, tiered.set)
    from django.conf import settings

    settings.configure()
    import polycache.django

    dj = polycache.django.Cache("memory://", {"TIMEOUT": 300})
    dj.set(KEY, VALUE)
    out["polycache django"] = (dj.get, dj.set)
    for get, set_ in out.values():
        assert get(KEY) == VALUE
        if set_ is not None:
            for key, value in RESIDENT.items():
                set_(key, value)
    return out


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    subs = subjects()
    ops = {"get hit": "get(k)", "get, 10k keys": "get(next(ks))", "set": "set_(k, v)"}
    best = {(s, op): float("inf") for s in subs for op in ops}
    keys = list(RESIDENT)
    gc.disable()
    for _ in range(rounds):
        for name, (get, set_) in subs.items():
            for op, stmt in ops.items():
                if op != "get hit" and set_ is None:
                    continue
                ks = itertools.cycle(keys)
                namespace = {"get": get, "set_": set_, "k": KEY, "v": VALUE, "ks": ks}
                t = timeit.Timer(stmt, globals=namespace).timeit(CALLS) / CALLS * 1e9
                best[(name, op)] = min(best[(name, op)], t)
    empty = min(timeit.Timer("pass").repeat(repeat=rounds, number=CALLS)) / CALLS * 1e9
    print(f"Python {sys.version.split()[0]}; ns per call, best of {rounds} rounds")
    print(f"(the empty loop costs {empty:.1f} ns per iteration, included in every number)")
    print(f"{'subject':26s}" + "".join(f"{op:>14s}{'/ cachebox':>12s}" for op in ops))
    for name in subs:
        row = f"{name:26s}"
        for op in ops:
            t = best[(name, op)]
            if t == float("inf"):
                row += f"{'':>26s}"
            else:
                row += f"{t:14.1f}{t / best[('cachebox LRU', op)]:11.2f}x"
        print(row)


if __name__ == "__main__":
    main()
