"""polycache's memory:// cache against the in-process caches a Python user would pick instead.

Times get (hit, 16-byte str), get (miss), set, get_many (100 keys) and incr on
`polycache.Cache("memory://")`, a plain `dict`, `cachebox.LRUCache`, Django's `LocMemCache`
and cachelib's `SimpleCache`, in one run, as ns per call (best of 5 tight loops), with the
ratio polycache / peer. Then measures memory per entry for 1,000,000 small entries in
polycache and in LocMemCache (RSS growth, each in a fresh subprocess).

Run: .venv/bin/python bench/python/bench_memory.py [--quick]
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import timeit
from collections.abc import Callable
from typing import Any

VALUE = "abcdefghijklmnop"  # 16 bytes
HIT, MISS = "hit-key", "miss-key"
MANY = [f"many-{i}" for i in range(100)]
REPEAT = 5


def make_polycache() -> Any:
    import polycache

    return polycache.Cache("memory://?max_entries=100000")


def make_locmem(max_entries: int = 100_000) -> Any:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.locmem import LocMemCache

    return LocMemCache(f"bench-{os.getpid()}", {"TIMEOUT": 300, "OPTIONS": {"MAX_ENTRIES": max_entries}})


# Each op is a statement timed in timeit's loop with its own namespace, so a call costs just
# the call (no wrapper frame): `get(k)` on a pre-bound method, as a tight loop would do it.
Op = tuple[str, dict[str, Any]]


def ops_polycache() -> dict[str, Op]:
    c = make_polycache()
    c.set(HIT, VALUE)
    c.set_many({k: VALUE for k in MANY})
    c.set("counter", 0)
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": MANY}),
        "incr": ("incr(k)", {"incr": c.incr, "k": "counter"}),
    }


def ops_dict() -> dict[str, Op]:
    d: dict[str, Any] = {HIT: VALUE, "counter": 0}
    d.update({k: VALUE for k in MANY})
    return {
        "get hit": ("get(k)", {"get": d.get, "k": HIT}),
        "get miss": ("get(k)", {"get": d.get, "k": MISS}),
        "set": ("d[k] = v", {"d": d, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("{k: d[k] for k in ks if k in d}", {"d": d, "ks": MANY}),
        "incr": ("d[k] += 1", {"d": d, "k": "counter"}),
    }


def ops_cachebox() -> dict[str, Op]:
    import cachebox

    c = cachebox.LRUCache(100_000)
    c[HIT] = VALUE
    for k in MANY:
        c[k] = VALUE
    c["counter"] = 0
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("c[k] = v", {"c": c, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("{k: v for k in ks if (v := get(k)) is not None}", {"get": c.get, "ks": MANY}),
        # Not atomic: cachebox has no incr.
        "incr": ("c[k] = c[k] + 1", {"c": c, "k": "counter"}),
    }


def ops_locmem() -> dict[str, Op]:
    c = make_locmem()
    c.set(HIT, VALUE)
    c.set_many({k: VALUE for k in MANY})
    c.set("counter", 0)
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": MANY}),
        "incr": ("incr(k)", {"incr": c.incr, "k": "counter"}),
    }


def ops_cachelib() -> dict[str, Op]:
    from cachelib import SimpleCache

    c = SimpleCache(threshold=100_000, default_timeout=300)
    c.set(HIT, VALUE)
    c.set_many({k: VALUE for k in MANY})
    c.set("counter", 0)
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(*ks)", {"get_many": c.get_many, "ks": MANY}),
        "incr": ("inc(k)", {"inc": c.inc, "k": "counter"}),
    }


LIBRARIES: dict[str, Callable[[], dict[str, Op]]] = {
    "polycache": ops_polycache,
    "dict": ops_dict,
    "cachebox": ops_cachebox,
    "django locmem": ops_locmem,
    "cachelib simple": ops_cachelib,
}
OPS = ["get hit", "get miss", "set", "get_many(100)", "incr"]


def time_op(op: Op, number: int) -> float:
    """Best-of-REPEAT ns per execution of the op's statement."""
    stmt, namespace = op
    timer = timeit.Timer(stmt, globals=namespace)
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e9


def calls_for(lib: str, op: str, quick: bool) -> int:
    slow = lib in ("django locmem", "cachelib simple")
    n = 1_000 if op == "get_many(100)" else 200_000
    if slow:
        n //= 20
    return max(n // 20, 100) if quick else n


def run_speed(quick: bool) -> None:
    results: dict[str, dict[str, float]] = {}
    for lib, make in LIBRARIES.items():
        ops = make()
        results[lib] = {op: time_op(ops[op], calls_for(lib, op, quick)) for op in OPS}
    loop = time_op(("pass", {}), 1_000_000)

    peers = [lib for lib in LIBRARIES if lib != "polycache"]
    print(f"Python {sys.version.split()[0]}; ns per call, best of {REPEAT} timeit loops")
    print(f"(the empty loop costs {loop:.1f} ns per iteration, included in every number)")
    print()
    header = f"{'op':15s}" + "".join(f"{lib:>17s}" for lib in LIBRARIES)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:15s}" + "".join(f"{results[lib][op]:17.0f}" for lib in LIBRARIES))
    print()
    print("polycache / peer (< 1: polycache is faster)")
    header = f"{'op':15s}" + "".join(f"{lib:>17s}" for lib in peers)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:15s}" + "".join(f"{results['polycache'][op] / results[lib][op]:17.2f}" for lib in peers))
    print()
    print("dict and cachebox have no get_many or incr: those rows time a comprehension and a")
    print("non-atomic read-modify-write. cachelib's get_many returns a list.")


# --- memory per entry ------------------------------------------------------------------------

N_ENTRIES = 1_000_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(lib: str) -> None:
    """Runs in a fresh subprocess: prints `rss_growth user_bytes stored_bytes`."""
    # Import everything first so that module loading is not counted.
    if lib == "polycache":
        import polycache
        from polycache._polycache import dumps

        serialized_len = lambda v: len(dumps(v))  # noqa: E731
    else:
        import pickle

        make_locmem(1)
        serialized_len = lambda v: len(pickle.dumps(v, pickle.HIGHEST_PROTOCOL))  # noqa: E731
    gc.collect()
    before = rss_bytes()
    if lib == "polycache":
        cache: Any = polycache.Cache("memory://?max_entries=2000000", timeout=None)
    else:
        cache = make_locmem(2 * N_ENTRIES)
    for i in range(N_ENTRIES):
        cache.set(f"k{i:07d}", f"v{i:07d}", timeout=None)
    gc.collect()
    after = rss_bytes()
    user = 16  # "k0000000" + "v0000000"
    stored = len(":1:k0000000") + serialized_len("v0000000")
    assert cache.get("k0000000") == "v0000000"
    print(after - before, user, stored)


def run_memory() -> None:
    print()
    print(f"memory per entry: {N_ENTRIES:,} entries, 8-char str keys and 8-char str values")
    print("(16 bytes of user data; stored as ':1:k0000000' and the pickled value)")
    print(f"{'library':15s}{'RSS/entry':>12s}{'stored k+v':>12s}{'overhead':>12s}{'vs user k+v':>13s}")
    for lib in ("polycache", "django locmem"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", lib], check=True, capture_output=True, text=True
        ).stdout.split()
        growth, user, stored = (int(x) for x in out)
        per = growth / N_ENTRIES
        print(f"{lib:15s}{per:12.1f}{stored:12d}{per - stored:12.1f}{per - user:13.1f}")
    print("overhead = RSS/entry - stored key+value bytes; 'vs user k+v' subtracts the 16 user bytes")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        measure_memory(sys.argv[2])
        return
    quick = "--quick" in sys.argv
    run_speed(quick)
    run_memory()


if __name__ == "__main__":
    main()
