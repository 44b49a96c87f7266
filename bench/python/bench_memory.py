"""polycache's memory:// cache against the in-process caches a Python user would pick instead.

Times get (hit, 16-byte str), get (hit, rotating over 10,000 resident keys), get (miss), set,
get_many (100 keys) and incr on `polycache.Cache("memory://")` and `polycache.django.Cache`,
against a plain `dict`, `cachebox.LRUCache`, `cachebox.TTLCache`, theine, cachelib's
`SimpleCache` and Django's `LocMemCache`, in one run, as ns per call (best of 5 tight loops),
with the ratio polycache / peer and the targets of docs/backends/memory.md. Then measures
resident memory per entry for 1,000,000 entries with 16-byte str keys and values (RSS growth,
each library in a fresh subprocess).

Then the cost of the per-operation latency histograms (docs/observability.md): `get` hit,
`get` miss and `set` on `memory://` with `latency_histograms` on and off, in alternating rounds.

And with `--otel` (that part only): the cost of polycache.otel's spans on a `get` hit, off,
instrumented without an SDK, and instrumented with one that records every span.

Run: .venv/bin/python bench/python/bench_memory.py [--quick] [--histograms | --otel (that part only)]
"""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import sys
import timeit
from collections.abc import Callable
from datetime import timedelta
from typing import Any

VALUE = "abcdefghijklmnop"  # 16 bytes
HIT, MISS = "hit-key", "miss-key"
MANY = [f"many-{i}" for i in range(100)]
# 16-byte keys, each with a 16-byte value of its own (one value under every key would let a
# store that shares decoded objects by their bytes answer all 10,000 from one object).
RESIDENT = {f"resident-{i:07d}": f"value-{i:010d}" for i in range(10_000)}
REPEAT = 5


def make_polycache() -> Any:
    import polycache

    return polycache.Cache("memory://?max_entries=100000")


def django_settings() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()


def make_polycache_django() -> Any:
    django_settings()
    import polycache.django

    return polycache.django.Cache("memory://", {"TIMEOUT": 300})


def make_locmem(max_entries: int = 100_000) -> Any:
    django_settings()
    from django.core.cache.backends.locmem import LocMemCache

    return LocMemCache(f"bench-{os.getpid()}", {"TIMEOUT": 300, "OPTIONS": {"MAX_ENTRIES": max_entries}})


# Each op is a statement timed in timeit's loop with its own namespace, so a call costs just
# the call (no wrapper frame): `get(k)` on a pre-bound method, as a tight loop would do it.
# "get hit, 10k keys" draws the next of 10,000 resident keys from an endless cycle (the same
# `next(keys)` cost for every library), so the lookups miss the CPU caches as real ones do;
# each key holds a value of its own.
Op = tuple[str, dict[str, Any]]


def cycle() -> Any:
    return itertools.cycle(list(RESIDENT))


def ops_django_api(c: Any) -> dict[str, Op]:
    """Django's cache API: polycache's two faces and LocMemCache."""
    c.set(HIT, VALUE)
    c.set_many({k: VALUE for k in MANY})
    c.set_many(RESIDENT)
    c.set("counter", 0)
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get hit, 10k keys": ("get(next(ks))", {"get": c.get, "ks": cycle()}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": MANY}),
        "incr": ("incr(k)", {"incr": c.incr, "k": "counter"}),
    }


def ops_polycache() -> dict[str, Op]:
    return ops_django_api(make_polycache())


def ops_polycache_django() -> dict[str, Op]:
    return ops_django_api(make_polycache_django())


def ops_locmem() -> dict[str, Op]:
    return ops_django_api(make_locmem())


def ops_mapping(c: Any) -> dict[str, Op]:
    """A mapping with `get` and item assignment: dict and cachebox's caches."""
    c[HIT] = VALUE
    for k in MANY:
        c[k] = VALUE
    for k, v in RESIDENT.items():
        c[k] = v
    c["counter"] = 0
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get hit, 10k keys": ("get(next(ks))", {"get": c.get, "ks": cycle()}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("c[k] = v", {"c": c, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("{k: v for k in ks if (v := get(k)) is not None}", {"get": c.get, "ks": MANY}),
        # Not atomic: neither has incr.
        "incr": ("c[k] = c[k] + 1", {"c": c, "k": "counter"}),
    }


def ops_dict() -> dict[str, Op]:
    return ops_mapping({})


def ops_cachebox_lru() -> dict[str, Op]:
    import cachebox

    return ops_mapping(cachebox.LRUCache(100_000))


def ops_cachebox_ttl() -> dict[str, Op]:
    import cachebox

    # TTLCache: one TTL for every entry (polycache's default is 300 s per entry).
    return ops_mapping(cachebox.TTLCache(100_000, 300))


def ops_theine() -> dict[str, Op]:
    from theine import Cache

    c: Any = Cache(100_000)
    ttl = timedelta(seconds=300)
    c.set(HIT, VALUE, ttl)
    for k in MANY:
        c.set(k, VALUE, ttl)
    for k, v in RESIDENT.items():
        c.set(k, v, ttl)
    c.set("counter", 0, ttl)
    # theine's get returns (value, found).
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get hit, 10k keys": ("get(next(ks))", {"get": c.get, "ks": cycle()}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("set_(k, v, ttl)", {"set_": c.set, "k": "set-key", "v": VALUE, "ttl": ttl}),
        "get_many(100)": ("{k: v for k in ks if (r := get(k))[1] and (v := r[0]) is not None}", {"get": c.get, "ks": MANY}),
        # Not atomic: theine has no incr.
        "incr": ("set_(k, get(k)[0] + 1, ttl)", {"set_": c.set, "get": c.get, "k": "counter", "ttl": ttl}),
    }


def ops_cachelib() -> dict[str, Op]:
    from cachelib import SimpleCache

    c = SimpleCache(threshold=100_000, default_timeout=300)
    c.set(HIT, VALUE)
    c.set_many({k: VALUE for k in MANY})
    c.set_many(RESIDENT)
    c.set("counter", 0)
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get hit, 10k keys": ("get(next(ks))", {"get": c.get, "ks": cycle()}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(*ks)", {"get_many": c.get_many, "ks": MANY}),
        "incr": ("inc(k)", {"inc": c.inc, "k": "counter"}),
    }


LIBRARIES: dict[str, Callable[[], dict[str, Op]]] = {
    "polycache": ops_polycache,
    "polycache django": ops_polycache_django,
    "dict": ops_dict,
    "cachebox LRU": ops_cachebox_lru,
    "cachebox TTL": ops_cachebox_ttl,
    "theine": ops_theine,
    "cachelib simple": ops_cachelib,
    "django locmem": ops_locmem,
}
OURS = ["polycache", "polycache django"]
OPS = ["get hit", "get hit, 10k keys", "get miss", "set", "get_many(100)", "incr"]
# (op, peer, at most this ratio polycache / peer), from docs/backends/memory.md.
TARGETS = [
    ("get hit", "cachebox LRU", 2.0),
    ("get hit, 10k keys", "cachebox LRU", 2.0),
    ("set", "cachebox LRU", 2.0),
    ("get hit", "django locmem", 1 / 25),
]


def time_op(op: Op, number: int) -> float:
    """Best-of-REPEAT ns per execution of the op's statement."""
    stmt, namespace = op
    timer = timeit.Timer(stmt, globals=namespace)
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e9


def calls_for(lib: str, op: str, quick: bool) -> int:
    slow = lib in ("django locmem", "cachelib simple", "theine")
    n = 1_000 if op == "get_many(100)" else 200_000
    if slow:
        n //= 20
    return max(n // 20, 100) if quick else n


def table(title: str, columns: list[str], cell: Callable[[str, str], str]) -> None:
    print(title)
    header = f"{'op':18s}" + "".join(f"{c:>17s}" for c in columns)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:18s}" + "".join(f"{cell(op, c):>17s}" for c in columns))
    print()


def run_speed(quick: bool) -> None:
    results: dict[str, dict[str, float]] = {}
    for lib, make in LIBRARIES.items():
        ops = make()
        results[lib] = {op: time_op(ops[op], calls_for(lib, op, quick)) for op in OPS}
    loop = time_op(("pass", {}), 1_000_000)
    spin = time_op(("next(ks)", {"ks": cycle()}), 1_000_000)

    peers = [lib for lib in LIBRARIES if lib not in OURS]
    print(f"Python {sys.version.split()[0]}; ns per call, best of {REPEAT} timeit loops")
    print(f"(the empty loop costs {loop:.1f} ns per iteration and next() on the key cycle {spin:.1f} ns,")
    print("included in every number)")
    print()
    table("ns per call", list(LIBRARIES), lambda op, lib: f"{results[lib][op]:.0f}")
    for ours in OURS:
        table(
            f"{ours} / peer (< 1: polycache is faster)",
            peers,
            lambda op, lib: f"{results[ours][op] / results[lib][op]:.2f}",  # noqa: B023
        )
    print("targets (polycache / peer):")
    for op, peer, limit in TARGETS:
        for ours in OURS:
            ratio = results[ours][op] / results[peer][op]
            verdict = "met" if ratio <= limit else "NOT met"
            print(f"  {ours:17s} {op:18s} vs {peer:14s} {ratio:6.3f}  (at most {limit:.3f}: {verdict})")
    print()
    print("dict, cachebox and theine have no get_many or incr: those rows time a comprehension")
    print("and a non-atomic read-modify-write. cachelib's get_many returns a list.")


# --- memory per entry ------------------------------------------------------------------------

N_ENTRIES = 1_000_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def key_value(i: int) -> tuple[str, str]:
    """The i-th entry: a 16-byte key and a 16-byte value."""
    return f"key-{i:012d}", f"val-{i:012d}"


MEMORY_LIBS = ["polycache", "dict", "cachebox LRU", "cachebox TTL", "theine", "django locmem"]


def measure_memory(lib: str) -> None:
    """Runs in a fresh subprocess: prints `rss_growth stored_bytes` for N_ENTRIES entries."""
    # Import everything and build the empty cache first, so that neither is counted.
    stored = 32  # the user's key and value bytes; polycache adds its key prefix and encoding
    cache: Any
    if lib == "polycache":
        import polycache
        from polycache._polycache import dumps

        key, value = key_value(0)
        stored = len(f":1:{key}") + len(dumps(value))
        cache = polycache.Cache("memory://?max_entries=2000000", timeout=None)
        put: Callable[[str, str], Any] = lambda k, v: cache.set(k, v, timeout=None)  # noqa: E731
    elif lib == "dict":
        cache = {}
        put = cache.__setitem__
    elif lib.startswith("cachebox"):
        import cachebox

        cache = cachebox.LRUCache(2 * N_ENTRIES) if lib == "cachebox LRU" else cachebox.TTLCache(2 * N_ENTRIES, 3600)
        put = cache.__setitem__
    elif lib == "theine":
        from theine import Cache

        cache = Cache(2 * N_ENTRIES)
        put = lambda k, v: cache.set(k, v)  # noqa: E731
    else:
        cache = make_locmem(2 * N_ENTRIES)
        put = lambda k, v: cache.set(k, v, timeout=None)  # noqa: E731
    entries = [key_value(i) for i in range(N_ENTRIES)]
    gc.collect()
    before = rss_bytes()
    for k, v in entries:
        put(k, v)
    gc.collect()
    after = rss_bytes()
    # The key and value strings exist before the store (the caller made them); a store that
    # keeps references to them (dict, cachebox, theine) adds its own bookkeeping only, one that
    # copies them (polycache, and LocMemCache's pickles) pays for its copies.
    print(after - before, stored)


def run_memory() -> None:
    print()
    print(f"resident memory per entry: {N_ENTRIES:,} entries, 16-byte str keys and 16-byte str values")
    print("(RSS growth while the entries go in, divided by the entries; the key and value str")
    print("objects exist beforehand: the stores that keep references to them hold ~2 x 65 bytes")
    print("of Python objects per entry more than this column shows)")
    print(f"{'library':15s}{'bytes/entry':>12s}{'stored k+v':>12s}")
    for lib in MEMORY_LIBS:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", lib], check=True, capture_output=True, text=True
        ).stdout.split()
        growth, stored = (int(x) for x in out)
        per = growth / N_ENTRIES
        note = "  (target: at most 120)" if lib == "polycache" else ""
        print(f"{lib:15s}{per:12.1f}{stored:12d}{note}")


HISTOGRAM_OPS = ["get hit", "get miss", "set"]


def run_histograms(quick: bool) -> None:
    """polycache.Cache with latency histograms on and off: the same ops, in alternating
    rounds (so load that comes and goes hits both alike); per op, the best round of each."""
    import polycache

    urls = {
        "on": "memory://?max_entries=100000",  # one call in 16 timed, the default
        "every": "memory://?max_entries=100000&latency_sampling=1",
        "off": "memory://?max_entries=100000&latency_histograms=off",
    }
    caches = {k: polycache.Cache(url) for k, url in urls.items()}
    ops = {}
    for k, c in caches.items():
        c.set(HIT, VALUE)
        ops[k] = {
            "get hit": ("get(k)", {"get": c.get, "k": HIT}),
            "get miss": ("get(k)", {"get": c.get, "k": MISS}),
            "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        }
    rounds = 3 if quick else 15
    number = 20_000 if quick else 200_000
    best: dict[str, dict[str, float]] = {k: {op: float("inf") for op in HISTOGRAM_OPS} for k in caches}
    for _ in range(rounds):
        for op in HISTOGRAM_OPS:
            for k in caches:
                best[k][op] = min(best[k][op], time_op(ops[k][op], number))
    print(f"latency histograms on memory://: ns per call, best of {rounds} alternating rounds")
    print("(on: the default, one call in 16 timed; every: latency_sampling=1; off: latency_histograms=off)")
    print(f"{'op':12s}{'on':>10s}{'every':>10s}{'off':>10s}{'on added':>10s}{'every added':>13s}")
    for op in HISTOGRAM_OPS:
        on, every, off = best["on"][op], best["every"][op], best["off"][op]
        print(
            f"{op:12s}{on:10.1f}{every:10.1f}{off:10.1f}{(on / off - 1) * 100:9.1f}%{(every / off - 1) * 100:12.1f}%"
        )
    assert caches["on"].stats()["ops"]["get"]["latency"]["count"] > 0
    assert caches["off"].stats()["ops"]["get"]["latency"] is None
    print()


def run_otel(quick: bool) -> None:
    """`get` hit on polycache.Cache with polycache.otel off (never instrumented, and after
    uninstrument()), instrumented with no OpenTelemetry SDK installed (the API's no-op), and
    instrumented with an SDK that records every span (only if opentelemetry-sdk is installed),
    in alternating rounds."""
    import polycache
    from polycache.otel import PolycacheInstrumentor

    c = polycache.Cache("memory://?max_entries=100000")
    c.set(HIT, VALUE)
    op = ("c.get(k)", {"c": c, "k": HIT})
    instrumentor = PolycacheInstrumentor()
    provider: Any = None
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        class Discard(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Discard()))
    except ImportError:
        pass
    modes: dict[str, Callable[[], None]] = {
        "off": lambda: None,
        "instrumented, no SDK": lambda: instrumentor.instrument(),
    }
    if provider is not None:
        modes["instrumented, recording"] = lambda: instrumentor.instrument(tracer_provider=provider)
    rounds = 3 if quick else 15
    number = 20_000 if quick else 200_000
    best = {mode: float("inf") for mode in modes}
    for _ in range(rounds):
        for mode, switch_on in modes.items():
            switch_on()
            best[mode] = min(best[mode], time_op(op, number))
            instrumentor.uninstrument()
    assert "get" not in type(c).__dict__, "uninstrument() leaves the class as it was"
    print(f"polycache.otel on memory:// get hit: ns per call, best of {rounds} alternating rounds")
    for mode, ns in best.items():
        print(f"{mode:28s}{ns:10.1f}{(ns / best['off'] - 1) * 100:9.1f}%")
    print()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        measure_memory(sys.argv[2])
        return
    quick = "--quick" in sys.argv
    if "--histograms" in sys.argv:
        run_histograms(quick)
        return
    if "--otel" in sys.argv:
        run_otel(quick)
        return
    run_speed(quick)
    run_histograms(quick)
    run_memory()


if __name__ == "__main__":
    main()
