"""polycache's awaitables against the async Redis client a Python user would pick instead.

One run, one redis-server (started here on a free loopback port, via tests/python/servers.py),
100-byte values, on asyncio's default loop and on uvloop:

* ``await cache.aget(k)`` on ``polycache.Cache("redis://…")`` (resolved by polycache's runtime
  through one completion queue per event loop);
* ``await r.get(k)`` on ``redis.asyncio`` with hiredis (in tests/python/requirements.txt);
* the thread-wrapped ``aget`` polycache had before: ``await asyncio.to_thread(cache.get, k)``;
* ``await cache.aget(k)`` with the design the completion queue was chosen over: each finished
  operation takes the GIL on its runtime thread and wakes the loop with one
  ``loop.call_soon_threadsafe`` (``polycache._polycache._wake_per_operation(True)``);
* when the wheel was built with the cargo feature ``bench-pyo3-async-runtimes``
  (``POLYCACHE_FEATURES=bench-pyo3-async-runtimes bash scripts/python-test.sh --build-only``):
  the same awaited get through ``pyo3_async_runtimes``' ``future_into_py`` on polycache's
  runtime (``polycache._polycache._aget_via_pyo3_async_runtimes``), the ready-made bridge the
  completion queue is measured against;

for one coroutine (µs per call, best of REPEAT loops) and for 256 coroutines awaiting at
once (calls per second, best of REPEAT rounds). Then ``memory://``: ``await cache.aget(k)``
against a sync ``cache.get(k)`` (ns per call), and pyo3-async-runtimes' get when present. Ratios are printed against the targets:
latency <= 0.7x redis.asyncio, throughput at 256 concurrent >= 3x redis.asyncio,
memory:// aget <= 1.5x get.

Run: .venv/bin/python bench/python/bench_async.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))
import servers  # noqa: E402

VALUE = b"v" * 100
REPEAT = 5
CONCURRENT = 256


def loops() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    found: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop

        found["uvloop"] = uvloop.new_event_loop
    except ImportError:
        print("uvloop is not installed: asyncio's loop only")
    return found


async def latency(call: Callable[[], Awaitable[Any]], n: int) -> float:
    """µs per call of one coroutine awaiting `call()` n times (best of REPEAT)."""
    best = float("inf")
    for _ in range(REPEAT):
        t = time.perf_counter()
        for _ in range(n):
            await call()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


async def throughput(call: Callable[[], Awaitable[Any]], per_task: int) -> float:
    """Calls per second of CONCURRENT coroutines each awaiting `call()` per_task times."""

    async def worker() -> None:
        for _ in range(per_task):
            await call()

    best = 0.0
    for _ in range(REPEAT):
        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENT)))
        best = max(best, CONCURRENT * per_task / (time.perf_counter() - t))
    return best


def via_pyo3_async_runtimes() -> Callable[..., Awaitable[Any]] | None:
    """pyo3-async-runtimes' awaited get, when the wheel has it (a cargo feature)."""
    from polycache import _polycache

    return getattr(_polycache, "_aget_via_pyo3_async_runtimes", None)


def redis_round(url: str, port: int, flavour: Callable[[], asyncio.AbstractEventLoop], quick: bool) -> dict[str, tuple[float, float]]:
    import redis.asyncio

    import polycache

    cache = polycache.Cache(url, key_prefix="pc")
    cache.set("hit", VALUE)
    n, per_task = (300, 5) if quick else (3000, 20)

    async def scenario() -> dict[str, tuple[float, float]]:
        client = redis.asyncio.Redis(host="127.0.0.1", port=port, max_connections=CONCURRENT)
        await client.set("hit", VALUE)
        assert await client.get("hit") == VALUE
        assert await cache.aget("hit") == VALUE
        peers: dict[str, Callable[[], Awaitable[Any]]] = {
            "polycache aget": lambda: cache.aget("hit"),
            "redis.asyncio": lambda: client.get("hit"),
            "to_thread(get)": lambda: asyncio.to_thread(cache.get, "hit"),
        }
        bridge = via_pyo3_async_runtimes()
        if bridge is not None:
            assert await bridge(cache, "hit") == VALUE
            peers["pyo3-async-runtimes"] = lambda: bridge(cache, "hit")
        out = {}
        for name, call in peers.items():
            out[name] = (await latency(call, n), await throughput(call, per_task))
        await client.aclose()
        return out

    async def per_operation() -> tuple[float, float]:
        call = lambda: cache.aget("hit")  # noqa: E731
        return await latency(call, n), await throughput(call, per_task)

    loop = flavour()
    try:
        results = loop.run_until_complete(scenario())
    finally:
        loop.close()
    from polycache import _polycache

    _polycache._wake_per_operation(True)
    loop = flavour()
    try:
        results["aget, wake per op"] = loop.run_until_complete(per_operation())
    finally:
        loop.close()
        _polycache._wake_per_operation(False)
    return results


def memory_round(flavour: Callable[[], asyncio.AbstractEventLoop], quick: bool) -> tuple[float, float, float | None]:
    import polycache

    cache = polycache.Cache("memory://")
    cache.set("hit", VALUE)
    n = 20_000 if quick else 200_000
    get, aget = cache.get, cache.aget

    def sync_ns() -> float:
        best = float("inf")
        for _ in range(REPEAT):
            t = time.perf_counter()
            for _ in range(n):
                get("hit")
            best = min(best, time.perf_counter() - t)
        return best / n * 1e9

    async def async_ns() -> float:
        best = float("inf")
        for _ in range(REPEAT):
            t = time.perf_counter()
            for _ in range(n):
                await aget("hit")
            best = min(best, time.perf_counter() - t)
        return best / n * 1e9

    bridge = via_pyo3_async_runtimes()

    async def bridge_ns() -> float | None:
        if bridge is None:
            return None
        best = float("inf")
        m = n // 10
        for _ in range(REPEAT):
            t = time.perf_counter()
            for _ in range(m):
                await bridge(cache, "hit")
            best = min(best, time.perf_counter() - t)
        return best / m * 1e9

    loop = flavour()
    try:
        return sync_ns(), loop.run_until_complete(async_ns()), loop.run_until_complete(bridge_ns())
    finally:
        loop.close()


def main() -> None:
    quick = "--quick" in sys.argv
    print(f"Python {sys.version.split()[0]}; redis:// 100-byte values; best of {REPEAT}")
    with servers.redis_server() as server:
        for name, flavour in loops().items():
            results = redis_round(server.url, server.port, flavour, quick)
            print(f"\n{name} loop: redis://")
            print(f"{'client':<20}{'1 coroutine (µs/call)':>24}{f'{CONCURRENT} coroutines (calls/s)':>28}")
            for client, (lat, thr) in results.items():
                print(f"{client:<20}{lat:>24.1f}{thr:>28,.0f}")
            ours, peer, old = results["polycache aget"], results["redis.asyncio"], results["to_thread(get)"]
            per_op = results["aget, wake per op"]
            print(f"latency    polycache / redis.asyncio = {ours[0] / peer[0]:.2f}  (target <= 0.70)"
                  f";  / to_thread = {ours[0] / old[0]:.2f}")
            print(f"throughput polycache / redis.asyncio = {ours[1] / peer[1]:.2f}  (target >= 3.00)"
                  f";  / to_thread = {ours[1] / old[1]:.2f}")
            print(f"completion queue / call_soon_threadsafe per op: latency {ours[0] / per_op[0]:.2f}, "
                  f"throughput {ours[1] / per_op[1]:.2f}")
            if "pyo3-async-runtimes" in results:
                bridge = results["pyo3-async-runtimes"]
                print(f"completion queue / pyo3-async-runtimes: latency {ours[0] / bridge[0]:.2f}, "
                      f"throughput {ours[1] / bridge[1]:.2f}")
    for name, flavour in loops().items():
        sync_ns, async_ns, bridge_ns = memory_round(flavour, quick)
        print(f"\n{name} loop: memory:// get {sync_ns:.0f} ns, await aget {async_ns:.0f} ns: "
              f"aget / get = {async_ns / sync_ns:.2f}  (target <= 1.50)")
        if bridge_ns is not None:
            print(f"{name} loop: memory:// pyo3-async-runtimes get {bridge_ns:.0f} ns: "
                  f"aget / it = {async_ns / bridge_ns:.2f}")


if __name__ == "__main__":
    main()
