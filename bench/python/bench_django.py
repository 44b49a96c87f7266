"""polycache's framework adapters against the caches a Django or Flask user has instead.

In one run, as ns per call (best of 5 tight timeit loops) with the speed-up peer / polycache:

* Django's cache API on memory://: ``polycache.django.Cache`` against Django's
  ``LocMemCache`` (get hit, also through the ``django.core.cache.cache`` proxy; get miss;
  set; get_many of 100 keys; incr; get_or_set hit). Target: get hit at least 10x faster.
  Twice: the default store (CLOCK-PRO) and, with ``OPTIONS={"MAX_ENTRIES": …}``, the exact
  LRU store with Django's cull.
* cachelib's API on memory://: ``polycache.flask.Cache`` against cachelib's ``SimpleCache``
  (get hit, get miss, set, get_many of 100, inc). Target: at least 5x faster. Twice too
  (``eviction=lru`` in the URL for the second).
* Django's cache API on redis://, when this build has the redis backend and redis-server
  is installed: ``polycache.django.Cache`` against Django's ``RedisCache`` on one private
  server (tests/python/servers.py). Target: at least 3x faster on every operation.

Run: .venv/bin/python bench/python/bench_django.py [--quick]
"""

from __future__ import annotations

import os
import shutil
import sys
import timeit
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

VALUE = "abcdefghijklmnop"  # 16 bytes
HIT, MISS = "hit-key", "miss-key"
MANY = [f"many-{i}" for i in range(100)]
REPEAT = 5
Op = tuple[str, dict[str, Any]]


def django_setup() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            CACHES={
                "default": {"BACKEND": "polycache.django.Cache", "LOCATION": "memory://bench-django"},
                "lru": {
                    "BACKEND": "polycache.django.Cache",
                    "LOCATION": "memory://bench-django-lru",
                    "OPTIONS": {"MAX_ENTRIES": 100_000},
                },
                "locmem": {
                    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                    "LOCATION": "bench-locmem",
                    "OPTIONS": {"MAX_ENTRIES": 100_000},
                },
            }
        )
        django.setup()


def django_ops(c: Any, proxy: Any | None = None) -> dict[str, Op]:
    c.set(HIT, VALUE)
    c.set_many({k: VALUE for k in MANY})
    c.set("counter", 0)
    ops = {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(ks)", {"get_many": c.get_many, "ks": MANY}),
        "incr": ("incr(k)", {"incr": c.incr, "k": "counter"}),
        "get_or_set hit": ("get_or_set(k, v)", {"get_or_set": c.get_or_set, "k": HIT, "v": VALUE}),
    }
    if proxy is not None:
        ops["get hit, proxy"] = ("cache.get(k)", {"cache": proxy, "k": HIT})
    return ops


def cachelib_ops(c: Any) -> dict[str, Op]:
    c.set(HIT, VALUE)
    c.set_many({k: VALUE for k in MANY})
    c.set("counter", 0)
    return {
        "get hit": ("get(k)", {"get": c.get, "k": HIT}),
        "get miss": ("get(k)", {"get": c.get, "k": MISS}),
        "set": ("set_(k, v)", {"set_": c.set, "k": "set-key", "v": VALUE}),
        "get_many(100)": ("get_many(*ks)", {"get_many": c.get_many, "ks": MANY}),
        "inc": ("inc(k)", {"inc": c.inc, "k": "counter"}),
    }


def time_op(op: Op, number: int) -> float:
    stmt, namespace = op
    return min(timeit.Timer(stmt, globals=namespace).repeat(repeat=REPEAT, number=number)) / number * 1e9


def compare(title: str, target: float, ours: dict[str, Op], peer_name: str, theirs: dict[str, Op], calls: int) -> None:
    print(f"\n{title}")
    header = f"{'op':17s}{'polycache':>12s}{peer_name:>16s}{'speed-up':>10s}"
    print(header)
    print("-" * len(header))
    for op in ours:
        many = op.startswith("get_many")
        n = max(calls // 100, 50) if many else calls
        mine = time_op(ours[op], n)
        peer = time_op(theirs[op], max(n // 10, 20))
        print(f"{op:17s}{mine:12.0f}{peer:16.0f}{peer / mine:9.1f}x")
    print(f"target: at least {target:g}x")


def run_memory(calls: int) -> None:
    django_setup()
    from cachelib import SimpleCache
    from django.core.cache import cache as proxy
    from django.core.cache import caches
    from django.utils.connection import ConnectionProxy

    import polycache.django
    import polycache.flask

    ours, lru, locmem = caches["default"], caches["lru"], caches["locmem"]
    assert isinstance(ours, polycache.django.Cache) and isinstance(lru, polycache.django.Cache)
    compare(
        "Django API, memory:// default store, CLOCK-PRO (ns/call)", 10,
        django_ops(ours, proxy), "LocMemCache", django_ops(locmem, ConnectionProxy(caches, "locmem")), calls,
    )
    print("'proxy': through django.core.cache.cache, whose per-call lookup of the thread's")
    print("connection (asgiref Local) costs the same few microseconds whatever the backend.")
    compare(
        "Django API, memory:// with MAX_ENTRIES, exact LRU + Django's cull (ns/call)", 10,
        django_ops(lru), "LocMemCache", django_ops(locmem), calls,
    )
    for mode, url in (
        ("default store, CLOCK-PRO", "memory://bench-cachelib"),
        ("eviction=lru", "memory://bench-cachelib-lru?max_entries=100000&eviction=lru"),
    ):
        compare(
            f"cachelib API, memory:// {mode} (ns/call)", 5,
            cachelib_ops(polycache.flask.Cache(url, 300)),
            "SimpleCache", cachelib_ops(SimpleCache(threshold=100_000, default_timeout=300)), calls,
        )


@contextmanager
def redis_url() -> Iterator[str | None]:
    import polycache

    if "redis://" not in polycache.SCHEMES or shutil.which("redis-server") is None:
        yield None
        return
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))
    import servers

    with servers.redis_server() as server:
        yield server.url


def run_redis(calls: int) -> None:
    with redis_url() as url:
        if url is None:
            print("\nDjango API, redis://: skipped (this build has no redis backend, or no redis-server)")
            return
        from django.core.cache.backends.redis import RedisCache

        import polycache.django

        # redis:// has one mode: MAX_ENTRIES and CULL_FREQUENCY are ignored, as RedisCache does.
        ours = polycache.django.Cache(url, {"KEY_PREFIX": "ours"})
        theirs = RedisCache(url, {"KEY_PREFIX": "theirs"})
        compare(
            "Django API, redis:// on one local server (ns/call)", 3,
            django_ops(ours), "RedisCache", django_ops(theirs), max(calls // 20, 500),
        )
        theirs.close()


def main() -> None:
    quick = "--quick" in sys.argv
    calls = 20_000 if quick else 200_000
    print(f"Python {sys.version.split()[0]}; ns per call, best of {REPEAT} timeit loops; speed-up = peer / polycache")
    run_memory(calls)
    run_redis(calls)


if __name__ == "__main__":
    main()
