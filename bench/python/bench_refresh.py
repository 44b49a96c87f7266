"""Memoized hits through @polycache.cached against the decorators a Python user would pick.

Times a hit on a memoized function (one int argument, and three mixed arguments) through
`@polycache.cached` on `memory://`, `cachebox.cached` (LRUCache), dogpile.cache's
`cache_on_arguments` on a `dogpile.cache.memory` region and Flask-Caching's `memoize` on a
`SimpleCache`, with `functools.lru_cache` as the in-process floor, in one run, as ns per
call (best of 5 timeit loops), with the ratio polycache / peer. Then a tiered cache's get
that hits L1 against a plain `memory://` get. Then, with a redis-server started here on a free
loopback port (via tests/python/servers.py), the cross-process invalidation latency of a
tiered cache on `bus=redis`: from the start of a `set` in this process to the moment a second
process, spinning on `get` of the key it holds in its L1, sees the new value (median and p99
over 200 writes; `time.perf_counter_ns` is CLOCK_MONOTONIC, shared by both processes).

Run: .venv/bin/python bench/python/bench_refresh.py [--quick]
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import timeit
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

REPEAT = 5
ARGS1 = (1,)
ARGS3 = (1, "abc", (2, 3))


def body(*args: Any) -> Any:
    return args[0]


def make_polycache() -> Callable[..., Any]:
    import polycache

    return polycache.cached(timeout=300, cache=polycache.Cache("memory://?max_entries=100000"))(body)


def make_cachebox() -> Callable[..., Any]:
    import cachebox

    return cachebox.cached(cachebox.LRUCache(100_000))(body)


def make_dogpile() -> Callable[..., Any]:
    from dogpile.cache import make_region

    region = make_region().configure("dogpile.cache.memory", expiration_time=300)
    return region.cache_on_arguments()(body)


def make_flask() -> Callable[..., Any]:
    from flask import Flask
    from flask_caching import Cache

    app = Flask("bench")
    cache = Cache(app, config={"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300})
    return cache.memoize(timeout=300)(body)


def make_lru() -> Callable[..., Any]:
    return functools.lru_cache(maxsize=100_000)(body)


LIBRARIES: dict[str, Callable[[], Callable[..., Any]]] = {
    "polycache": make_polycache,
    "cachebox": make_cachebox,
    "dogpile.cache": make_dogpile,
    "flask-caching": make_flask,
    "lru_cache": make_lru,
}
OPS = {"hit f(1)": ARGS1, "hit f(1,'abc',(2,3))": ARGS3}


def time_stmt(stmt: str, namespace: dict[str, Any], number: int) -> float:
    """Best-of-REPEAT ns per execution of `stmt`."""
    timer = timeit.Timer(stmt, globals=namespace)
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e9


def calls_for(lib: str, quick: bool) -> int:
    n = {"dogpile.cache": 20_000, "flask-caching": 5_000}.get(lib, 200_000)
    return max(n // 20, 100) if quick else n


def run_decorators(quick: bool) -> None:
    results: dict[str, dict[str, float]] = {}
    for lib, make in LIBRARIES.items():
        f = make()
        results[lib] = {}
        for op, args in OPS.items():
            assert f(*args) == args[0]  # the miss that fills the cache
            assert f(*args) == args[0]
            results[lib][op] = time_stmt("f(*a)", {"f": f, "a": args}, calls_for(lib, quick))
    loop = time_stmt("pass", {}, 1_000_000)

    print(f"Python {sys.version.split()[0]}; memoized hit, ns per call, best of {REPEAT} timeit loops")
    print(f"(the empty loop costs {loop:.1f} ns per iteration, included in every number)")
    print()
    header = f"{'op':24s}" + "".join(f"{lib:>16s}" for lib in LIBRARIES)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:24s}" + "".join(f"{results[lib][op]:16.0f}" for lib in LIBRARIES))
    print()
    peers = [lib for lib in LIBRARIES if lib != "polycache"]
    print("polycache / peer (< 1: polycache is faster)")
    header = f"{'op':24s}" + "".join(f"{lib:>16s}" for lib in peers)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:24s}" + "".join(f"{results['polycache'][op] / results[lib][op]:16.2f}" for lib in peers))
    print()
    print("lru_cache keeps results in a dict in the process: no TTL, no shared backend, no")
    print("stable keys; it is the floor, not a peer.")


def run_tiered(quick: bool) -> None:
    import polycache

    plain = polycache.Cache("memory://?max_entries=100000")
    l2 = quote("memory://bench-tiered-l2", safe="")
    tiered = polycache.Cache(f"tiered://?l1={quote('memory://?max_entries=100000', safe='')}&l2={l2}")
    for c in (plain, tiered):
        c.set("k", "abcdefghijklmnop")
        assert c.get("k") == "abcdefghijklmnop"
    n = 20_000 if quick else 500_000
    p = time_stmt("get(k)", {"get": plain.get, "k": "k"}, n)
    t = time_stmt("get(k)", {"get": tiered.get, "k": "k"}, n)
    print()
    print("tiered get hitting L1 vs plain memory:// get (16-byte str), ns per call")
    print(f"{'memory://':24s}{p:16.0f}")
    print(f"{'tiered:// (L1 hit)':24s}{t:16.0f}")
    print(f"{'tiered / memory':24s}{t / p:16.2f}   (target: <= 1.5)")


#: The second process: for each line "VALUE", answers "go", spins on get("lat") until it
#: returns VALUE, then answers the perf_counter_ns at which it saw it.
WATCHER = textwrap.dedent(
    """
    import sys, time
    import polycache

    cache = polycache.Cache(sys.argv[1])
    get, now = cache.get, time.perf_counter_ns
    print("ready", flush=True)
    for line in sys.stdin:
        want = line.strip()
        print("go", flush=True)
        while get("lat") != want:
            pass
        print(now(), flush=True)
    """
)


def run_invalidation(quick: bool) -> None:
    import polycache

    print()
    if "redis://" not in polycache.SCHEMES or shutil.which("redis-server") is None:
        print("cross-process invalidation: skipped (needs the redis feature and redis-server)")
        return
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "python"))
    import servers

    writes = 50 if quick else 200
    with servers.redis_server() as server:
        url = f"tiered://?l2={quote(server.url, safe='')}&bus=redis&l1_timeout=600&key_prefix=bench"
        writer = polycache.Cache(url)
        writer.set("lat", "v0")
        watcher = subprocess.Popen(
            [sys.executable, "-c", WATCHER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert watcher.stdin is not None and watcher.stdout is not None
        try:
            assert watcher.stdout.readline().strip() == "ready"
            seen, wrote = [], []
            for i in range(writes + 1):
                value = f"v{i}"
                watcher.stdin.write(value + "\n")
                watcher.stdin.flush()
                assert watcher.stdout.readline().strip() == "go"
                start = time.perf_counter_ns()
                if i > 0:  # v0 is already stored: the watcher's first round fills its L1
                    writer.set("lat", value)
                done = time.perf_counter_ns()
                at = int(watcher.stdout.readline())
                if i > 0:
                    seen.append((at - start) / 1000)
                    wrote.append((done - start) / 1000)
        finally:
            watcher.stdin.close()
            watcher.wait(10)
            watcher.stdout.close()
    seen.sort()
    p99 = seen[min(len(seen) - 1, int(len(seen) * 0.99))]
    print(f"cross-process L1 invalidation over redis pub/sub, {writes} writes, microseconds")
    print(f"{'set() itself (L2 + PUBLISH)':32s}{'median':>10s}{statistics.median(wrote):10.0f}")
    print(f"{'set() start -> other sees it':32s}{'median':>10s}{statistics.median(seen):10.0f}")
    print(f"{'':32s}{'p99':>10s}{p99:10.0f}   (target: < 100000)")


def main() -> None:
    quick = "--quick" in sys.argv
    run_decorators(quick)
    run_tiered(quick)
    run_invalidation(quick)


if __name__ == "__main__":
    main()
