"""polycache's redis:// cache against the Redis clients a Python user would pick instead.

One run, one redis-server (started here on a free loopback port, via tests/python/servers.py),
100-byte values. Times get (hit), set (with a TTL), get_many(100), set_many(100) with a TTL
and incr on:

* polycache.Cache("redis://…")
* raw redis-py (with hiredis when installed: it is in tests/python/requirements.txt),
  with MGET for get_many and MSET (no TTL) for set_many — the floor the targets name
* Django's django.core.cache.backends.redis.RedisCache
* django-redis's RedisCache
* cachelib's RedisCache

as µs per call (best of REPEAT loops), with each peer's time divided by polycache's (above
1 means polycache is faster). Then `redis-benchmark` on the same server as the ceiling, and
8 threads calling get for a fixed time: aggregate calls per second, polycache vs redis-py.

Run: .venv/bin/python bench/python/bench_redis.py [--quick]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))
import servers  # noqa: E402

VALUE = b"v" * 100
MANY = [f"many-{i}" for i in range(100)]
MANY_ITEMS = {k: VALUE for k in MANY}
TTL = 300
REPEAT = 5
OPS = ["get", "set", "get_many(100)", "set_many(100)", "incr"]
Op = tuple[str, dict[str, Any]]


def make_polycache(url: str) -> Any:
    import polycache

    return polycache.Cache(url, key_prefix="pc", timeout=TTL)


def ops_polycache(url: str) -> dict[str, Op]:
    c = make_polycache(url)
    c.set("hit", VALUE)
    c.set_many(MANY_ITEMS)
    c.set("counter", 0)
    return {
        "get": ("get(k)", {"get": c.get, "k": "hit"}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": MANY}),
        "set_many(100)": ("set_many(d)", {"set_many": c.set_many, "d": MANY_ITEMS}),
        "incr": ("incr(k)", {"incr": c.incr, "k": "counter"}),
    }


def ops_redis_py(url: str) -> dict[str, Op]:
    import redis

    r = redis.Redis.from_url(url)
    keys = [f"raw:{k}" for k in MANY]
    r.set("raw:hit", VALUE)
    r.mset({k: VALUE for k in keys})
    r.set("raw:counter", 0)
    return {
        "get": ("get(k)", {"get": r.get, "k": "raw:hit"}),
        "set": ("set_(k, v, ex=t)", {"set_": r.set, "k": "raw:set-key", "v": VALUE, "t": TTL}),
        "get_many(100)": ("mget(ks)", {"mget": r.mget, "ks": keys}),
        # MSET cannot carry a TTL: the floor the set_many target is measured against.
        "set_many(100)": ("mset(d)", {"mset": r.mset, "d": {k: VALUE for k in keys}}),
        "incr": ("incr(k)", {"incr": r.incr, "k": "raw:counter"}),
    }


def django_configured() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()


def django_ops(c: Any) -> dict[str, Op]:
    c.set("hit", VALUE)
    c.set_many(MANY_ITEMS)
    c.set("counter", 0)
    return {
        "get": ("get(k)", {"get": c.get, "k": "hit"}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": MANY}),
        "set_many(100)": ("set_many(d)", {"set_many": c.set_many, "d": MANY_ITEMS}),
        "incr": ("incr(k)", {"incr": c.incr, "k": "counter"}),
    }


def ops_django(url: str) -> dict[str, Op]:
    django_configured()
    from django.core.cache.backends.redis import RedisCache

    return django_ops(RedisCache(url, {"KEY_PREFIX": "dj", "TIMEOUT": TTL}))


def ops_django_redis(url: str) -> dict[str, Op]:
    django_configured()
    from django_redis.cache import RedisCache

    return django_ops(RedisCache(url, {"KEY_PREFIX": "djr", "TIMEOUT": TTL}))


def ops_cachelib(url: str) -> dict[str, Op]:
    from cachelib import RedisCache

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    c = RedisCache(host="127.0.0.1", port=port, key_prefix="cl:", default_timeout=TTL)
    c.set("hit", VALUE)
    c.set_many(MANY_ITEMS)
    c.set("counter", 0)
    return {
        "get": ("get(k)", {"get": c.get, "k": "hit"}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(*ks)", {"get_many": c.get_many, "ks": MANY}),
        "set_many(100)": ("set_many(d)", {"set_many": c.set_many, "d": MANY_ITEMS}),
        "incr": ("inc(k)", {"inc": c.inc, "k": "counter"}),
    }


LIBRARIES: dict[str, Callable[[str], dict[str, Op]]] = {
    "polycache": ops_polycache,
    "redis-py": ops_redis_py,
    "django RedisCache": ops_django,
    "django-redis": ops_django_redis,
    "cachelib RedisCache": ops_cachelib,
}


def time_op(op: Op, number: int) -> float:
    """µs per execution of the op's statement, one loop of `number` calls."""
    stmt, namespace = op
    return timeit.Timer(stmt, globals=namespace).timeit(number) / number * 1e6


def run_speed(url: str, quick: bool) -> dict[str, dict[str, float]]:
    all_ops: dict[str, dict[str, Op]] = {}
    for lib, make in LIBRARIES.items():
        try:
            all_ops[lib] = make(url)
        except ImportError as e:
            print(f"  {lib}: skipped ({e})")
    # Rounds interleave the libraries, so a burst of load on a shared machine hits all of
    # them alike; each cell is its best round.
    results: dict[str, dict[str, float]] = {lib: {} for lib in all_ops}
    for round_ in range(REPEAT + 1):
        for op in OPS:
            n = 300 if "many" in op else 5_000
            n = max(n // 10, 20) if quick or round_ == 0 else n
            for lib, ops in all_ops.items():
                t = time_op(ops[op], n)
                if round_ > 0:  # round 0 warms up connections and scripts
                    results[lib][op] = min(results[lib].get(op, t), t)
    ours = results["polycache"]
    width = max(len(lib) for lib in results) + 2
    print(f"\nµs per call (best of {REPEAT}), 100-byte values; ratio = peer / polycache (>1: polycache faster)\n")
    print(f"{'library':<{width}}" + "".join(f"{op:>22}" for op in OPS))
    for lib, row in results.items():
        cells = []
        for op in OPS:
            t = row[op]
            cells.append(f"{t:10.1f}" + ("" if lib == "polycache" else f" ({t / ours[op]:5.2f}x)") + " " * (0 if lib != "polycache" else 9))
        print(f"{lib:<{width}}" + "".join(f"{c:>22}" for c in cells))
    return results


def redis_benchmark(port: int, quick: bool) -> None:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        print("\nredis-benchmark: not installed (Debian package redis-tools)")
        return
    n = "20000" if quick else "100000"
    for extra, label in (([], "50 clients (default)"), (["-c", "1"], "1 client")):
        out = subprocess.run([exe, "-p", str(port), "-q", "-t", "get,set", "-n", n, "-P", "1", *extra],
                             capture_output=True, text=True, check=True).stdout
        rates = dict(re.findall(r"(GET|SET): ([\d.]+) requests per second", out))
        cells = ", ".join(f"{op} {float(r):,.0f}/s = {1e6 / float(r):.1f} µs/op" for op, r in rates.items())
        print(f"redis-benchmark -q -t get,set -n {n} -P 1 {' '.join(extra)} [{label}]: {cells}")


def run_threads(url: str, quick: bool) -> None:
    import redis

    seconds = 0.5 if quick else 2.0
    pc = make_polycache(url)
    pc.set("hit", VALUE)
    raw = redis.Redis.from_url(url, max_connections=16)
    raw.set("raw:hit", VALUE)
    clients: dict[str, Callable[[], Any]] = {
        "polycache": lambda: pc.get("hit"),
        "redis-py": lambda: raw.get("raw:hit"),
    }
    rates: dict[str, float] = {}
    for name, call in clients.items():
        counts = [0] * 8
        stop = threading.Event()

        def work(i: int, call: Callable[[], Any] = call) -> None:
            n = 0
            while not stop.is_set():
                for _ in range(50):
                    call()
                n += 50
            counts[i] = n

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        rates[name] = sum(counts) / (time.perf_counter() - started)
    print(f"\n8 threads calling get for {seconds} s: " + ", ".join(f"{k} {v:,.0f} calls/s" for k, v in rates.items())
          + f"; polycache / redis-py = {rates['polycache'] / rates['redis-py']:.2f}x")


def main() -> None:
    quick = "--quick" in sys.argv
    import polycache

    if "redis://" not in polycache.SCHEMES:
        print("bench_redis: skipped, the installed polycache was built without the redis feature "
              "(build it with POLYCACHE_FEATURES=redis)")
        return
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "pure Python"
    import redis

    print(f"Python {sys.version.split()[0]}, redis-py {redis.__version__} ({parser} parser)")
    with servers.redis_server() as server:
        run_speed(server.url, quick)
        print()
        redis_benchmark(server.port, quick)
        run_threads(server.url, quick)


if __name__ == "__main__":
    main()
