"""polycache's memcached:// cache against the memcached clients a Python user would pick instead.

Times get (hit), set, get_many (100 keys), set_many (100 keys) and incr, with 100-byte values,
on one memcached server this script starts on a free loopback port, for:
polycache.Cache("memcached://..."), pymemcache's Client, Django's PyMemcacheCache, pylibmc's
Client over the text and the binary protocol, and Django's PyLibMCCache, in one run, as µs per
call (best of 5 timeit loops), with the ratio polycache / peer. pylibmc and PyLibMCCache are
left out (and said so) when pylibmc is not installed.

Run: .venv/bin/python bench/python/bench_memcached.py [--quick]
"""

from __future__ import annotations

import os
import sys
import timeit
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))
import servers  # noqa: E402

VALUE = bytes(range(100))  # 100 bytes
HIT = "hit-key"
MANY = [f"many-{i}" for i in range(100)]
MANY_ITEMS = {k: VALUE for k in MANY}
REPEAT = 5
OPS = ["get", "set", "get_many(100)", "set_many(100)", "incr"]

# Each op is a statement timed in timeit's loop with its own namespace, so a call costs just
# the call (no wrapper frame).
Op = tuple[str, dict[str, Any]]


def ops_polycache(port: int) -> dict[str, Op]:
    import polycache

    c = polycache.Cache(f"memcached://127.0.0.1:{port}", key_prefix="poly")
    c.set(HIT, VALUE)
    c.set("counter", 0)
    c.set_many(MANY_ITEMS)
    return {
        "get": ("get(k)", {"get": c.get, "k": HIT}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": MANY}),
        "set_many(100)": ("set_many(items)", {"set_many": c.set_many, "items": MANY_ITEMS}),
        "incr": ("incr(k)", {"incr": c.incr, "k": "counter"}),
    }


def ops_pymemcache(port: int) -> dict[str, Op]:
    from pymemcache.client.base import Client

    # Raw bytes, no serializer: the cheapest way pymemcache can store these values. Writes
    # wait for the server's answer, as polycache's, Django's and pylibmc's do (pymemcache's
    # own default, noreply, does not learn whether a write was stored).
    c = Client(("127.0.0.1", port), no_delay=True, default_noreply=False)
    c.set("pm:" + HIT, VALUE)
    c.set("pm:counter", b"0")
    keys = ["pm:" + k for k in MANY]
    items = {k: VALUE for k in keys}
    c.set_many(items)
    return {
        "get": ("get(k)", {"get": c.get, "k": "pm:" + HIT}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "pm:set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": keys}),
        "set_many(100)": ("set_many(items)", {"set_many": c.set_many, "items": items}),
        "incr": ("incr(k, 1)", {"incr": c.incr, "k": "pm:counter"}),
    }


def django_settings() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()


def ops_django(port: int, backend: str, prefix: str) -> dict[str, Op]:
    django_settings()
    from django.core.cache.backends import memcached

    cls = getattr(memcached, backend)
    c = cls(f"127.0.0.1:{port}", {"KEY_PREFIX": prefix, "TIMEOUT": 300})
    c.set(HIT, VALUE)
    c.set("counter", 0)
    c.set_many(MANY_ITEMS)
    return {
        "get": ("get(k)", {"get": c.get, "k": HIT}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": MANY}),
        "set_many(100)": ("set_many(items)", {"set_many": c.set_many, "items": MANY_ITEMS}),
        "incr": ("incr(k)", {"incr": c.incr, "k": "counter"}),
    }


def ops_pylibmc(port: int, binary: bool) -> dict[str, Op]:
    import pylibmc

    c = pylibmc.Client([f"127.0.0.1:{port}"], binary=binary, behaviors={"tcp_nodelay": True})
    p = "lb:" if binary else "lt:"
    c.set(p + HIT, VALUE)
    c.set(p + "counter", 0)
    keys = [p + k for k in MANY]
    items = {k: VALUE for k in keys}
    c.set_multi(items)
    return {
        "get": ("get(k)", {"get": c.get, "k": p + HIT}),
        "set": ("set_(k, v)", {"set_": c.set, "k": p + "set-key", "v": VALUE}),
        "get_many(100)": ("get_multi(ks)", {"get_multi": c.get_multi, "ks": keys}),
        "set_many(100)": ("set_multi(items)", {"set_multi": c.set_multi, "items": items}),
        "incr": ("incr(k)", {"incr": c.incr, "k": p + "counter"}),
    }


def libraries(port: int) -> tuple[dict[str, Callable[[], dict[str, Op]]], list[str]]:
    libs: dict[str, Callable[[], dict[str, Op]]] = {
        "polycache": lambda: ops_polycache(port),
        "pymemcache": lambda: ops_pymemcache(port),
        "django PyMemcache": lambda: ops_django(port, "PyMemcacheCache", "dj"),
    }
    notes = []
    try:
        import pylibmc  # noqa: F401
    except ImportError as e:
        notes.append(f"pylibmc is not installed ({e}): pylibmc and Django's PyLibMCCache were skipped")
    else:
        libs["pylibmc text"] = lambda: ops_pylibmc(port, binary=False)
        libs["pylibmc binary"] = lambda: ops_pylibmc(port, binary=True)
        libs["django PyLibMC"] = lambda: ops_django(port, "PyLibMCCache", "djl")
    return libs, notes


def time_op(op: Op, number: int) -> float:
    """Best-of-REPEAT µs per execution of the op's statement."""
    stmt, namespace = op
    timer = timeit.Timer(stmt, globals=namespace)
    timer.timeit(max(number // 10, 1))  # warm up connections and caches
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e6


def calls_for(op: str, quick: bool) -> int:
    n = 200 if op.endswith("(100)") else 3_000
    return max(n // 10, 10) if quick else n


def main() -> None:
    import polycache

    if "memcached://" not in polycache.SCHEMES:
        print("bench_memcached: skipped, this polycache wheel was built without the memcached feature")
        return
    quick = "--quick" in sys.argv
    with servers.memcached_server() as server:
        libs, notes = libraries(server.port)
        results: dict[str, dict[str, float]] = {}
        for lib, make in libs.items():
            ops = make()
            results[lib] = {op: time_op(ops[op], calls_for(op, quick)) for op in OPS}
        version = os.popen("memcached -V").read().strip()

    width = 19
    peers = [lib for lib in libs if lib != "polycache"]
    print(f"Python {sys.version.split()[0]}, {version} on a loopback TCP port, 100-byte values")
    print(f"µs per call, best of {REPEAT} timeit loops")
    print()
    header = f"{'op':15s}" + "".join(f"{lib:>{width}s}" for lib in libs)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:15s}" + "".join(f"{results[lib][op]:{width}.1f}" for lib in libs))
    print()
    print("polycache / peer (< 1: polycache is faster)")
    header = f"{'op':15s}" + "".join(f"{lib:>{width}s}" for lib in peers)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:15s}" + "".join(f"{results['polycache'][op] / results[lib][op]:{width}.2f}" for lib in peers))
    print()
    print("polycache and Django pickle the bytes value (Django's serializer rules); pymemcache and")
    print("pylibmc store bytes raw. pymemcache writes wait for the server's answer (default_noreply=False).")
    print("get_many/set_many are get_multi/set_multi on pylibmc.")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
