"""Awaited jobs (``Job.aget`` and its twins, ``@cacheback`` on ``async def``) and the native
async paths of ``@cached`` and ``aget_or_set_with``, on memory:// and redis://."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import polycache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with servers.redis_server() as s:
        yield s.url


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest, redis_url: str) -> Iterator[polycache.Cache]:
    if request.param == "memory":
        yield polycache.Cache("memory://?max_entries=10000")
        return
    c = polycache.Cache(redis_url, key_prefix=f"ajobs-{time.monotonic_ns()}")
    yield c
    c.clear()


async def soon(cond: Callable[[], Awaitable[bool]], within: float = 10.0) -> bool:
    """True as soon as ``await cond()`` is; False if it is still false after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(0.005)
    return await cond()


class AsyncReport(polycache.Job):
    lifetime = 0.05

    def __init__(self, cache: polycache.Cache, **kwargs: Any) -> None:
        super().__init__(cache=cache, **kwargs)
        self.calls: list[tuple[Any, ...]] = []
        self.failing = False
        self.statuses: list[polycache.CacheStatus] = []

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        await asyncio.sleep(0.01)
        if self.failing:
            raise RuntimeError("async fetch failed")
        return f"v{len(self.calls)}"

    def process_result(self, result: Any, call: polycache.Call, cache_status: polycache.CacheStatus, sync_fetch: bool | None = None) -> Any:
        self.statuses.append(cache_status)
        return result


class SyncReport(AsyncReport):
    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        if self.failing:
            raise RuntimeError("sync fetch failed")
        return f"v{len(self.calls)}"


@pytest.mark.parametrize("kind", [AsyncReport, SyncReport])
def test_aget_fetches_serves_stale_and_refreshes_behind(cache: polycache.Cache, kind: type[AsyncReport]) -> None:
    job = kind(cache)

    async def main() -> None:
        assert await job.aget("x") == "v1"
        assert job.statuses[-1] is polycache.Job.MISS
        assert await job.aget("x") == "v1"
        assert job.statuses[-1] is polycache.Job.HIT
        await asyncio.sleep(0.08)
        assert await job.aget("x") == "v1", "stale, refreshing behind"
        assert job.statuses[-1] is polycache.Job.STALE

        # Refreshed behind; with a 50 ms lifetime, later reads may refresh it again (v3, ...).
        async def refreshed() -> bool:
            return len(job.calls) >= 2 and await job.aget("x") != "v1"

        assert await soon(refreshed)
        # The sync API reads what the async one stored.
        if kind is SyncReport:
            assert job.get("x") not in (None, "v1")

    asyncio.run(main())


@pytest.mark.parametrize("kind", [AsyncReport, SyncReport])
def test_a_raising_fetch_raises_from_the_await_and_stores_nothing(cache: polycache.Cache, kind: type[AsyncReport]) -> None:
    job = kind(cache)
    job.failing = True

    async def main() -> None:
        with pytest.raises(RuntimeError, match="fetch failed"):
            await job.aget("x")
        with pytest.raises(RuntimeError, match="fetch failed"):
            await job.arefresh("x")
        job.failing = False
        assert await job.aget("x") == "v3"

    asyncio.run(main())


@pytest.mark.parametrize("kind", [AsyncReport, SyncReport])
def test_ainvalidate_adelete_arefresh_aset(cache: polycache.Cache, kind: type[AsyncReport]) -> None:
    job = kind(cache, lifetime=60)

    async def main() -> None:
        assert await job.aget("x") == "v1"
        assert await job.ainvalidate("x") is True
        # Stale until the background refresh stores v2 (a sync fetch may already have).
        value = await job.aget("x")
        assert (value, job.statuses[-1]) in (("v1", polycache.Job.STALE), ("v2", polycache.Job.HIT))

        async def refreshed() -> bool:
            return bool(await job.aget("x") == "v2")

        assert await soon(refreshed)
        assert await job.adelete("x") is True
        assert await job.adelete("x") is False
        # Absent: False (a refresh of "z" is still scheduled, as invalidate does).
        assert await job.ainvalidate("z") is False
        fetched = await job.arefresh("y")
        assert fetched.startswith("v") and await job.aget("y") == fetched
        assert await job.aset("x", data="manual") is True
        assert await job.aget("x") == "manual"
        assert job.statuses[-1] is polycache.Job.HIT

    asyncio.run(main())


def test_concurrent_agets_of_a_miss_cause_one_fetch(cache: polycache.Cache) -> None:
    job = AsyncReport(cache, lifetime=60)

    async def main() -> list[Any]:
        return await asyncio.gather(*(job.aget("x") for _ in range(64)))

    assert asyncio.run(main()) == ["v1"] * 64
    assert len(job.calls) == 1


def test_fetch_on_miss_false_refreshes_an_async_fetch_in_the_background(cache: polycache.Cache) -> None:
    job = AsyncReport(cache, fetch_on_miss=False, lifetime=60)

    async def main() -> None:
        assert await job.aget("x") is None
        assert job.statuses[-1] is polycache.Job.MISS

        async def fetched() -> bool:
            return bool(await job.aget("x") == "v1")

        assert await soon(fetched)

    asyncio.run(main())


def test_cacheback_on_an_async_function(cache: polycache.Cache) -> None:
    calls = []

    @polycache.cacheback(lifetime=0.05, cache=cache)
    async def expensive(x: int) -> int:
        calls.append(x)
        return x * len(calls)

    async def main() -> None:
        assert await expensive(2) == 2
        assert await expensive(2) == 2
        await asyncio.sleep(0.08)
        assert await expensive(2) == 2, "stale, refreshing behind"

        # Refreshed behind (4); with a 50 ms lifetime, later reads may refresh it again.
        async def refreshed() -> bool:
            return bool(await expensive(2) >= 4)

        assert await soon(refreshed)
        assert await expensive.refresh(2) >= 6  # type: ignore[attr-defined]
        assert await expensive.delete(2) is True  # type: ignore[attr-defined]

    asyncio.run(main())


def test_the_sync_api_of_an_async_fetch_says_what_to_use(cache: polycache.Cache) -> None:
    job = AsyncReport(cache)
    with pytest.raises(TypeError, match=r"await job\.aget"):
        job.get("x")


def test_an_unstorable_fetched_value_raises_from_the_await(cache: polycache.Cache) -> None:
    class Unpicklable(AsyncReport):
        async def fetch(self, *args: Any, **kwargs: Any) -> Any:
            return lambda: None

    async def main() -> None:
        with pytest.raises(Exception, match="pickle|serializ"):
            await Unpicklable(cache).aget("x")

    asyncio.run(main())


def test_awaited_lookups_and_stores_use_no_thread_of_the_blocking_pool(redis_url: str) -> None:
    # With a blocking pool of one thread, held by a sync loader that waits for a gate, the
    # awaited lookups and stores of @cached, aget_or_set_with and Job.aget must still finish:
    # they are the core's native async ones. (They used to queue behind the loader.)
    code = textwrap.dedent(
        f"""
        import asyncio, threading, polycache

        cache = polycache.Cache({redis_url!r}, key_prefix="native-paths")
        cache.clear()
        started, gate = threading.Event(), threading.Event()

        def slow():
            started.set()
            gate.wait(60)
            return "slow"

        @polycache.cached(cache=cache)
        async def double(x):
            return 2 * x

        class J(polycache.Job):
            async def fetch(self, x):
                return x + 1

        async def main():
            blocker = asyncio.ensure_future(cache.aget_or_set_with("slow", slow))
            while not started.is_set():
                await asyncio.sleep(0.005)
            assert await asyncio.wait_for(double(21), 30) == 42  # lookup, then store
            assert await asyncio.wait_for(double(21), 30) == 42  # hit
            await cache.aset("k", 1)
            assert await asyncio.wait_for(cache.aget_or_set_with("k", slow), 30) == 1
            job = J(cache=cache)
            assert await asyncio.wait_for(job.aget(1), 30) == 2
            assert await asyncio.wait_for(job.aget(1), 30) == 2
            gate.set()
            assert await blocker == "slow"
            print("ok")

        asyncio.run(main())
        """
    )
    env = dict(os.environ, POLYCACHE_BLOCKING_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
