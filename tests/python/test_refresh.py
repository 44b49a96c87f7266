"""Refresh without stampedes: get_or_set_with, @cached, Job/@cacheback, tiered caches, stats."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from urllib.parse import quote
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import polycache

sys.path.insert(0, os.path.dirname(__file__))
from polling import eventually  # noqa: E402


def run_threads(n: int, target: Callable[[], Any]) -> list[Any]:
    """Runs `target` in `n` threads released together; returns their results in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return results


# --- get_or_set_with ---------------------------------------------------------------------------


def test_64_threads_on_an_expired_key_cause_one_fetch(cache: polycache.Cache) -> None:
    cache.set("hot", "old", timeout=0.02)
    time.sleep(0.05)
    calls = []

    def loader() -> dict[str, int]:
        calls.append(1)
        time.sleep(0.1)
        return {"fresh": 1}

    results = run_threads(64, lambda: cache.get_or_set_with("hot", loader))
    assert len(calls) == 1
    assert all(r == {"fresh": 1} for r in results)
    stats = cache.stats()
    assert stats["refreshes"] == 1
    assert stats["misses"] == 64
    assert cache.get("hot") == {"fresh": 1}


def test_get_or_set_with_raises_the_loaders_exception_and_stores_nothing(cache: polycache.Cache) -> None:
    class Boom(Exception):
        pass

    def loader() -> int:
        raise Boom("upstream down")

    with pytest.raises(Boom, match="upstream down"):
        cache.get_or_set_with("k", loader)
    assert cache.get("k", "absent") == "absent"
    assert cache.get_or_set_with("k", lambda: 7) == 7
    assert cache.get_or_set_with("k", lambda: 8) == 7
    with pytest.raises(TypeError, match="callable"):
        cache.get_or_set_with("k2", 5)  # type: ignore[arg-type]


def test_a_failing_leader_lets_a_waiter_compute(cache: polycache.Cache) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def loader() -> str:
        with lock:
            calls.append(1)
            n = len(calls)
        time.sleep(0.05)
        if n == 1:
            raise RuntimeError("first try fails")
        return "ok"

    outcomes: list[str] = []

    def call() -> None:
        try:
            outcomes.append(cache.get_or_set_with("k", loader))
        except RuntimeError:
            outcomes.append("raised")

    run_threads(8, call)
    assert outcomes.count("raised") == 1
    assert outcomes.count("ok") == 7
    assert len(calls) == 2


def test_the_lease_keeps_separate_caches_to_one_fetch(store_name: str) -> None:
    # Four caches over one named store stand for four processes over one server.
    caches = [polycache.Cache(f"memory://{store_name}?lease=true") for _ in range(4)]
    calls = []

    def loader() -> str:
        calls.append(1)
        time.sleep(0.1)
        return "r"

    counter = iter(range(1000))
    results = run_threads(16, lambda: caches[next(counter) % 4].get_or_set_with("k", loader))
    assert results == ["r"] * 16
    assert len(calls) == 1


def test_xfetch_stores_an_envelope_and_refreshes_early() -> None:
    # beta = 20,000 with a ~20 ms compute time gives an expected head start of ~400 s on a
    # 60 s TTL: each read recomputes early with probability ~0.86, so 50 reads cannot all
    # miss it (beta = 1,000 made that e^-3 a read, and the test failed about 1 run in 13).
    cache = polycache.Cache("memory://?xfetch_beta=20000")
    n = iter(range(100))

    def loader() -> int:
        time.sleep(0.02)
        return next(n)

    assert cache.get_or_set_with("k", loader, timeout=60) == 0
    # Stored in an envelope with its expiry and compute time; Python's get reads the payload.
    assert cache.get("k") == 0
    values = {cache.get_or_set_with("k", loader, timeout=60) for _ in range(50)}
    assert values - {0}, "XFetch never refreshed early"
    assert cache.stats()["misses"] == 1


def test_aget_or_set_with_shares_one_async_computation(cache: polycache.Cache) -> None:
    calls = []

    async def loader() -> str:
        calls.append(1)
        await asyncio.sleep(0.05)
        return "v"

    async def main() -> list[Any]:
        return await asyncio.gather(*(cache.aget_or_set_with("k", loader) for _ in range(20)))

    assert asyncio.run(main()) == ["v"] * 20
    assert len(calls) == 1
    assert asyncio.run(cache.aget_or_set_with("k", lambda: "other")) == "v"


# --- @cached -----------------------------------------------------------------------------------


def test_cached_memoizes_by_arguments(cache: polycache.Cache) -> None:
    calls = []

    @polycache.cached(timeout=60, cache=cache)
    def add(a: int, b: int = 0, *, scale: float = 1.0) -> float:
        calls.append((a, b, scale))
        return (a + b) * scale

    assert add(1, 2) == 3
    assert add(1, 2) == 3
    assert add(1, 3) == 4
    assert add(1, 2, scale=2.0) == 6
    assert len(calls) == 3
    assert add.__name__ == "add" and add.__wrapped__ is not None  # type: ignore[attr-defined]
    key = add.key(1, 2)  # type: ignore[attr-defined]
    assert key.startswith(f"{__name__}.test_cached_memoizes_by_arguments.<locals>.add:")
    assert len(key.rsplit(":", 1)[1]) == 32
    assert add.key(1, 2) != add.key(2, 1)  # type: ignore[attr-defined]
    assert add.key(1, scale=2.0, b=2) == add.key(1, b=2, scale=2.0)  # type: ignore[attr-defined]
    # The value is a plain cache entry under that key.
    assert cache.get(key) == 3
    assert add.invalidate(1, 2) is True  # type: ignore[attr-defined]
    assert add(1, 2) == 3
    assert len(calls) == 4
    assert add.refresh(1, 2) == 3  # type: ignore[attr-defined]
    assert len(calls) == 5


def test_cached_keys_are_stable_across_processes() -> None:
    args = (1, "two", 3.0, None, True, b"\x00", (1, [2, {"b": 1, "a": {3, 2}}]), frozenset({"x"}))
    here = polycache._polycache.call_key("f", args, {"z": 1, "a": 2})
    code = textwrap.dedent(
        f"""
        import polycache
        print(polycache._polycache.call_key("f", {args!r}, {{"a": 2, "z": 1}}))
        """
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert there.stdout.strip() == here


def test_cached_methods_skip_self_unless_it_has_a_cache_key(cache: polycache.Cache) -> None:
    calls = []

    class Repo:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        @polycache.cached(cache=cache)
        def user(self, uid: int) -> str:
            calls.append(uid)
            return f"{self.tenant}:{uid}"

    class TenantRepo(Repo):
        def __cache_key__(self) -> str:
            return self.tenant

    assert Repo("a").user(1) == "a:1"
    assert Repo("b").user(1) == "a:1", "instances share entries (dogpile's rule)"
    assert len(calls) == 1
    assert TenantRepo("x").user(1) == "x:1"
    assert TenantRepo("y").user(1) == "y:1"
    assert len(calls) == 3
    assert Repo.user.invalidate(None, 1) is True  # type: ignore[attr-defined]


def test_cached_key_function_prefix_and_version(cache: polycache.Cache) -> None:
    @polycache.cached(cache=cache, key_prefix="users", version=3, key=lambda uid: f"u{uid}")
    def user(uid: int) -> dict[str, int]:
        return {"id": uid}

    assert user(5) == {"id": 5}
    assert cache.get("users:u5", version=3) == {"id": 5}
    assert cache.make_key("users:u5", version=3) == ":3:users:u5"

    @polycache.cached(cache=cache, key=lambda uid: uid)
    def bad(uid: int) -> int:
        return uid

    with pytest.raises(TypeError, match="must return a str"):
        bad(1)


def test_cached_timeout_words(cache: polycache.Cache) -> None:
    calls = []

    @polycache.cached(timeout=0, cache=cache)
    def never_stored(x: int) -> int:
        calls.append(x)
        return x

    never_stored(1)
    never_stored(1)
    assert len(calls) == 2

    @polycache.cached(timeout=0.05, cache=cache)
    def short(x: int) -> int:
        calls.append(x)
        return x

    short(1)
    short(1)
    assert len(calls) == 3
    time.sleep(0.1)
    short(1)
    assert len(calls) == 4


def test_cached_without_arguments_uses_the_default_cache_and_follows_configure() -> None:
    calls = []

    @polycache.cached
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    try:
        polycache.caches.configure({"default": {"LOCATION": "memory://", "KEY_PREFIX": "one"}})
        assert f(2) == 4
        assert polycache.caches["default"].get(f.key(2)) == 4  # type: ignore[attr-defined]
        polycache.caches.configure({"default": {"LOCATION": "memory://", "KEY_PREFIX": "two"}})
        assert f(2) == 4
        assert len(calls) == 2, "the new default cache was used"
        assert f.cache.key_prefix == "two"  # type: ignore[attr-defined]
    finally:
        polycache.caches.configure({"default": {"LOCATION": "memory://"}})


def test_cached_unknown_cache_name_and_bad_arguments(cache: polycache.Cache) -> None:
    @polycache.cached(cache="no-such-cache")
    def f() -> int:
        return 1

    with pytest.raises(KeyError, match="no-such-cache"):
        f()

    @polycache.cached(cache=cache)
    def g(x: object) -> int:
        return 1

    with pytest.raises(TypeError, match="lock"):
        g(threading.Lock())
    with pytest.raises(TypeError, match="get and set"):
        polycache.cached(cache=42)(lambda: 1)


def test_cached_single_flight_across_64_threads(cache: polycache.Cache) -> None:
    calls = []

    @polycache.cached(cache=cache)
    def slow(x: int) -> int:
        calls.append(x)
        time.sleep(0.1)
        return x + 1

    assert run_threads(64, lambda: slow(41)) == [42] * 64
    assert len(calls) == 1


def test_cached_exceptions_propagate_and_are_not_cached(cache: polycache.Cache) -> None:
    calls = []

    @polycache.cached(cache=cache)
    def fails(x: int) -> int:
        calls.append(x)
        raise ValueError(f"bad {x}")

    for _ in range(2):
        with pytest.raises(ValueError, match="bad 1"):
            fails(1)
    assert len(calls) == 2


def test_cached_over_a_get_set_pair_and_a_backend_object() -> None:
    store: dict[str, Any] = {}
    calls = []

    @polycache.cached(cache=(store.get, store.__setitem__))
    def f(x: int) -> int:
        calls.append(x)
        return x * 10

    assert f(1) == 10 and f(1) == 10
    assert len(calls) == 1
    assert list(store.values()) == [10]
    assert run_threads(16, lambda: f(2)) == [20] * 16
    assert len(calls) == 2

    from cachelib import SimpleCache

    backend = SimpleCache()

    @polycache.cached(backend=backend, timeout=60)
    def g(x: int) -> int:
        calls.append(x)
        return x

    g(5)
    g(5)
    assert len(calls) == 3
    assert backend.get(g.key(5)) == 5  # type: ignore[attr-defined]
    g.invalidate(5)  # type: ignore[attr-defined]
    g(5)
    assert len(calls) == 4


def test_cached_async_functions_share_one_computation(cache: polycache.Cache) -> None:
    calls = []

    @polycache.cached(cache=cache, timeout=60)
    async def fetch(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0.05)
        return x * 2

    async def main() -> None:
        results = await asyncio.gather(*(fetch(3) for _ in range(50)), fetch(4))
        assert results == [6] * 50 + [8]
        assert sorted(calls) == [3, 4]
        assert await fetch(3) == 6
        assert len(calls) == 2
        assert fetch.invalidate(3) is True  # type: ignore[attr-defined]
        assert await fetch(3) == 6
        assert len(calls) == 3
        assert await fetch.refresh(3) == 6  # type: ignore[attr-defined]
        assert len(calls) == 4

    asyncio.run(main())
    assert cache.get(fetch.key(3)) == 6  # type: ignore[attr-defined]


def test_cached_async_failures_let_waiters_retry(cache: polycache.Cache) -> None:
    calls = []

    @polycache.cached(cache=cache)
    async def flaky(x: int) -> str:
        calls.append(x)
        await asyncio.sleep(0.02)
        if len(calls) == 1:
            raise ConnectionError("first call fails")
        return "ok"

    async def main() -> list[Any]:
        return await asyncio.gather(*(flaky(1) for _ in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert sum(isinstance(r, ConnectionError) for r in results) == 1
    assert results.count("ok") == 4
    assert len(calls) == 2


def test_cached_async_functions_refresh_early_with_xfetch() -> None:
    # beta = 10^6 with a ~20 ms compute time gives an expected head start of ~20,000 s on a
    # 60 s TTL: every read is chosen to refresh early except with probability ~0.003.
    cache = polycache.Cache("memory://?xfetch_beta=1000000")
    n = iter(range(1000))

    @polycache.cached(cache=cache, timeout=60)
    async def f(x: int) -> int:
        await asyncio.sleep(0.02)
        return next(n)

    async def main() -> None:
        assert await f(1) == 0
        # Stored in an envelope with its expiry and compute time; get reads the payload.
        assert cache.get(f.key(1)) == 0  # type: ignore[attr-defined]
        values = [await f(1) for _ in range(20)]
        assert set(values) - {0}, "XFetch never refreshed early"
        # Concurrent reads chosen to refresh: one awaiter recomputes, the others get the
        # current value at once instead of waiting for it.
        current = await f(1)
        results = await asyncio.gather(*(f(1) for _ in range(20)))
        assert results.count(current) >= 19, results
        assert len(set(results)) <= 2, results

    asyncio.run(main())
    stats = cache.stats()
    assert stats["misses"] == 1
    assert stats["refreshes"] >= 3


def test_cached_async_failed_early_refresh_keeps_the_current_value() -> None:
    cache = polycache.Cache("memory://?xfetch_beta=1000000")
    calls = []

    @polycache.cached(cache=cache, timeout=60)
    async def f() -> str:
        calls.append(1)
        await asyncio.sleep(0.02)
        if len(calls) > 1:
            raise ConnectionError("the source is down")
        return "first"

    async def main() -> list[str]:
        assert await f() == "first"
        return [await f() for _ in range(5)]

    assert asyncio.run(main()) == ["first"] * 5
    assert len(calls) > 1, "an early refresh was tried"
    assert cache.get(f.key()) == "first"  # type: ignore[attr-defined]


def test_cached_async_method_and_pair(cache: polycache.Cache) -> None:
    store: dict[str, Any] = {}

    class Service:
        @polycache.cached(cache=cache)
        async def get(self, x: int) -> int:
            await asyncio.sleep(0)
            return x + 100

    @polycache.cached(cache=(store.get, store.__setitem__))
    async def h(x: int) -> int:
        return x

    async def main() -> None:
        assert await Service().get(1) == 101
        assert await h(7) == 7
        assert list(store.values()) == [7]

    asyncio.run(main())


# --- Job and @cacheback ---------------------------------------------------------------------


class Report(polycache.Job):
    lifetime = 0.05

    def __init__(self, cache: polycache.Cache, delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(cache=cache, **kwargs)
        self.calls: list[tuple[Any, ...]] = []
        self.delay = delay
        self.failing = False
        self.results: list[tuple[Any, polycache.CacheStatus]] = []

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        time.sleep(self.delay)
        if self.failing:
            raise RuntimeError("fetch failed")
        return f"v{len(self.calls)}"

    # The three-argument hook (polycache's before cacheback's sync_fetch) is still called.
    def process_result(self, result: Any, call: polycache.Call, cache_status: polycache.CacheStatus) -> Any:  # type: ignore[override]
        self.results.append((result, cache_status))
        return result


def test_a_stale_value_is_returned_at_once_while_the_refresh_runs(cache: polycache.Cache) -> None:
    job = Report(cache, delay=0.3)
    assert job.get("x") == "v1"
    assert job.results[-1] == ("v1", polycache.Job.MISS)
    assert job.get("x") == "v1"
    assert job.results[-1][1] == polycache.Job.HIT
    job.delay = 0.3
    time.sleep(0.08)
    assert job.get("x") == "v1"
    assert job.results[-1][1] == polycache.Job.STALE
    # It returned while the 300 ms refresh was still running.
    assert job.is_refreshing("x")
    for _ in range(10):
        assert job.get("x") == "v1"
    assert eventually(lambda: not job.is_refreshing("x"))
    assert len(job.calls) == 2, "one background refresh"
    assert job.get("x") == "v2"
    stats = cache.stats()
    assert stats["stale_hits"] == 11
    assert stats["refreshes"] == 2


def test_a_raising_fetch_keeps_the_stale_value_and_is_retried(
    cache: polycache.Cache, caplog: pytest.LogCaptureFixture
) -> None:
    job = Report(cache)
    job.get("x")
    time.sleep(0.08)
    job.failing = True
    for attempt in (1, 2, 3):
        assert job.get("x") == "v1"
        assert eventually(lambda: len(job.calls) == 1 + attempt and not job.is_refreshing("x"))
    # Logged by the core on a pool thread, emitted by the polycache-log thread.
    assert eventually(lambda: "background refresh" in caplog.text and "RuntimeError: fetch failed" in caplog.text)
    job.failing = False
    job.get("x")
    assert eventually(lambda: job.get("x") == "v5")


def test_the_staleness_bound_forces_a_synchronous_fetch(cache: polycache.Cache) -> None:
    job = Report(cache, max_stale=0.05)
    job.get("x")
    time.sleep(0.15)
    job.failing = True
    with pytest.raises(RuntimeError, match="fetch failed"):
        job.get("x")
    job.failing = False
    assert job.get("x") == "v3"
    assert job.results[-1][1] == polycache.Job.STALE


def test_should_fetch_synchronously_and_expiry_hooks(cache: polycache.Cache) -> None:
    class Sync(Report):
        def should_fetch_synchronously(self, *args: Any, **kwargs: Any) -> bool:
            return True

        def expiry(self, *args: Any, **kwargs: Any) -> float:
            return time.time() + (0.02 if args == ("short",) else 60)

    job = Sync(cache)
    job.get("short")
    job.get("long")
    time.sleep(0.05)
    assert job.get("short") == "v3", "stale after its own expiry, fetched in the caller"
    assert job.get("long") == "v2", "still fresh"


def test_invalidate_refreshes_in_the_background(cache: polycache.Cache) -> None:
    job = Report(cache, lifetime=60, delay=0.05)
    assert job.get("x") == "v1"
    assert job.invalidate("x") is True
    assert job.get("x") == "v1"
    assert job.results[-1][1] == polycache.Job.STALE
    assert eventually(lambda: job.get("x") == "v2")
    assert len(job.calls) == 2
    assert job.delete("x") is True
    assert job.delete("x") is False
    assert job.refresh("x") == "v3"
    assert job.set("x", data="manual") is True
    assert job.get("x") == "manual"


def test_fetch_on_miss_false_returns_none_and_refreshes(cache: polycache.Cache) -> None:
    job = Report(cache, fetch_on_miss=False)
    assert job.get("x") is None
    assert job.results[-1] == (None, polycache.Job.MISS)
    assert eventually(lambda: job.get("x") == "v1")


def test_64_threads_on_a_job_miss_cause_one_fetch(cache: polycache.Cache) -> None:
    job = Report(cache, lifetime=60, delay=0.1)
    assert run_threads(64, lambda: job.get("x")) == ["v1"] * 64
    assert len(job.calls) == 1


def test_a_raising_synchronous_fetch_raises_in_the_caller(cache: polycache.Cache) -> None:
    job = Report(cache)
    job.failing = True
    with pytest.raises(RuntimeError, match="fetch failed"):
        job.get("x")


def test_cacheback_decorator(cache: polycache.Cache) -> None:
    calls = []

    @polycache.cacheback(lifetime=0.05, cache=cache)
    def expensive(x: int) -> int:
        calls.append(x)
        return x * len(calls)

    assert expensive(2) == 2
    # No second call while fresh: on a loaded machine it could come after the lifetime, start
    # a refresh, and the stale value checked next would already be the refreshed one.
    time.sleep(0.08)
    assert expensive(2) == 2, "stale, refreshing behind"
    assert eventually(lambda: expensive(2) == 4)
    assert expensive.job.lifetime == 0.05  # type: ignore[attr-defined]
    assert expensive.delete(2) is True  # type: ignore[attr-defined]

    @polycache.cacheback(fetch_on_miss=False, cache=cache)
    def later(x: int) -> int:
        return x

    assert later(1) is None
    assert eventually(lambda: later(1) == 1)


def test_a_job_without_fetch_raises_not_implemented(cache: polycache.Cache) -> None:
    with pytest.raises(NotImplementedError, match="fetch"):
        polycache.Job(cache=cache).get(1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_refreshes_in_the_background() -> None:
    # The refresh pool's threads stay in the parent: the child must start its own, and not
    # wait for a refresh the parent was running when it forked.
    code = textwrap.dedent(
        """
        import os, threading, time, polycache

        gate = threading.Event()

        class J(polycache.Job):
            lifetime = 0.01
            n = 0
            def fetch(self):
                self.n += 1
                if self.n == 2 and os.getpid() == parent:
                    gate.wait(5)  # the parent's refresh is running when it forks
                return self.n

        parent = os.getpid()
        job = J(cache=polycache.Cache("memory://"))
        job.get()
        time.sleep(0.05)
        job.get()  # stale: the parent's refresh starts and blocks
        time.sleep(0.1)
        pid = os.fork()
        if pid == 0:
            deadline = time.monotonic() + 5
            while job.get() < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            print("child", job.get(), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        gate.set()
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    value = int(proc.stdout.split()[-1])
    assert value >= 3, f"the child served the stale value {value}, never refreshed"


def test_interpreter_exit_does_not_hang_on_background_refreshes() -> None:
    code = textwrap.dedent(
        """
        import logging, time, polycache
        logging.basicConfig(level=logging.DEBUG)

        class Slow(polycache.Job):
            lifetime = 0.01
            def fetch(self, i):
                time.sleep(0.3)
                return i

        job = Slow(cache=polycache.Cache("memory://"))
        for i in range(40):
            job.get(i)
        time.sleep(0.02)
        for i in range(40):
            job.get(i)          # 40 stale hits: refreshes queued and running
        print("exiting")
        """
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "exiting"
    # The 4 running refreshes finished; the queued ones were dropped, without a word.
    assert proc.stderr == "", proc.stderr
    assert time.monotonic() - started < 20


# --- several processes -------------------------------------------------------------------------


_PROCESS_WORKER = textwrap.dedent(
    """
    import sys, threading, time
    import polycache

    url, counter, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cache = polycache.Cache(url)

    def loader():
        with open(counter, "a") as f:
            f.write("x\\n")
        time.sleep(0.3)
        return "shared"

    out = []
    def call():
        out.append(cache.get_or_set_with("k", loader))

    threads = [threading.Thread(target=call) for _ in range(4)]
    time.sleep(max(0.0, start - time.time()))   # every process starts at the same moment
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(",".join(out))
    """
)


@pytest.mark.skipif(
    "file://" not in polycache.SCHEMES,
    reason="needs a backend that several processes share (file://), not in this build; "
    "the lead builds the wheel with every backend when they land",
)
def test_four_processes_on_one_expired_key_cause_one_fetch(tmp_path: Any) -> None:
    url = f"file://{tmp_path / 'cache'}?lease=true"
    counter = str(tmp_path / "calls")
    polycache.Cache(url).set("k", "old", timeout=0.01)
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS_WORKER, url, counter, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "shared,shared,shared,shared"
    with open(counter) as f:
        assert f.read() == "x\n", "one fetch for 16 callers in 4 processes"


# --- tiered ----------------------------------------------------------------------------------


def test_tiered_caches_on_one_bus_see_each_others_writes(store_name: str) -> None:
    url = f"tiered://?l1={quote('memory://?max_entries=100', safe='')}&l2={quote('memory://' + store_name, safe='')}&bus=local:{store_name}"
    a, b = polycache.Cache(url), polycache.Cache(url)
    a.set("k", {"v": 1})
    assert b.get("k") == {"v": 1}
    a.set("k", {"v": 2})
    assert eventually(lambda: b.get("k") == {"v": 2}, within=0.1)
    a.delete("k")
    assert eventually(lambda: b.get("k") is None, within=0.1)
    assert a.location.startswith("tiered://")
    with pytest.raises(polycache.ConfigurationError, match="l2"):
        polycache.Cache("tiered://")


#: The other process of the Redis bus tests: its own tiered cache, answering ``get KEY`` and
#: ``set KEY VALUE`` lines.
OTHER = textwrap.dedent(
    """
    import sys
    import polycache

    cache = polycache.Cache(sys.argv[1])
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[0] == "get":
            print(repr(cache.get(words[1])), flush=True)
        elif words[0] == "set":
            cache.set(words[1], words[2])
            print("ok", flush=True)
        else:
            break
    """
)


class OtherProcess:
    """A second Python process with a tiered cache on ``url``."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OTHER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._reply() == "ready"

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the other process ended"
        return line.strip()

    def ask(self, request: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def get(self, key: str) -> str:
        return self.ask(f"get {key}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


needs_redis = pytest.mark.skipif(
    "redis://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the redis feature (POLYCACHE_FEATURES=redis)",
)


@pytest.fixture(scope="module")
def redis() -> Iterator[Any]:
    sys.path.insert(0, os.path.dirname(__file__))
    import servers

    with servers.redis_server() as s:
        yield s


def redis_tiered_url(server: Any, prefix: str) -> str:
    # A 10-minute L1, so that within the test only an invalidation can refresh an L1 copy.
    return f"tiered://?l2={quote(server.url, safe='')}&bus=redis&l1_timeout=600&key_prefix={prefix}"


@needs_redis
def test_a_write_in_one_process_drops_the_l1_copy_in_another(redis: Any) -> None:
    url = redis_tiered_url(redis, "xproc")
    other = OtherProcess(url)
    try:
        a = polycache.Cache(url)
        plain = polycache.Cache(redis.url, key_prefix="xproc")  # writes L2 only, publishes nothing
        plain.set("k", "old")
        assert other.get("k") == "'old'"
        plain.set("k", "behind its back")
        assert other.get("k") == "'old'", "the other process answers from its L1"

        a.set("k", "new")
        assert eventually(lambda: other.get("k") == "'new'"), other.get("k")
        a.delete("k")
        assert eventually(lambda: other.get("k") == "None")

        a.set("c", "x")
        assert other.get("c") == "'x'"
        a.clear()
        plain.set("c", "after the clear")
        assert eventually(lambda: other.get("c") == "'after the clear'")

        # And the other way round.
        a.set("w", "from-a")
        assert other.ask("set w from-b") == "ok"
        assert eventually(lambda: a.get("w") == "from-b")
    finally:
        other.close()
    assert other.proc.returncode == 0


@needs_redis
def test_tiered_bus_options_are_checked(redis: Any) -> None:
    with pytest.raises(polycache.ConfigurationError, match="bus=redis"):
        polycache.Cache(f"tiered://?l2={quote('memory://', safe='')}&bus=redis")
    with pytest.raises(polycache.ConfigurationError, match="bus"):
        polycache.Cache(f"tiered://?l2={quote(redis.url, safe='')}&bus=carrier-pigeon")


@needs_redis
def test_tracking_drops_l1_copies_on_writes_by_redis_py(redis: Any) -> None:
    redis_py = pytest.importorskip(
        "redis",
        reason="redis-py is in the main suite's requirements.txt, not in the other CPythons' "
        "requirements-versions.txt: this test runs in the main suite",
    )

    url = f"tiered://?l2={quote(redis.url, safe='')}&bus=tracking&l1_timeout=600&key_prefix=pytrack"
    other = OtherProcess(url)
    raw = redis_py.Redis.from_url(redis.url)
    try:
        a = polycache.Cache(url)
        raw.set("pytrack:1:k", 1)  # an int: stored as ASCII decimal, as polycache stores it
        assert a.get("k") == 1
        assert other.get("k") == "1"
        raw.set("pytrack:1:k", 2)  # redis-py publishes nothing: the server notifies
        assert eventually(lambda: a.get("k") == 2)
        assert eventually(lambda: other.get("k") == "2"), other.get("k")
        raw.eval("redis.call('SET', KEYS[1], ARGV[1])", 1, "pytrack:1:k", 3)
        assert eventually(lambda: other.get("k") == "3"), other.get("k")

        async def read() -> Any:
            return await a.aget("k")

        assert asyncio.run(read()) == 3
        raw.flushall()
        assert eventually(lambda: asyncio.run(read()) is None)
        assert eventually(lambda: other.get("k") == "None")
    finally:
        other.close()
        raw.close()
    with pytest.raises(polycache.ConfigurationError, match="needs a Redis l2"):
        polycache.Cache(f"tiered://?l2={quote('memory://', safe='')}&bus=tracking")


@needs_redis
def test_tracking_over_a_redis_cluster_sees_writes_on_every_primary() -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    import servers

    with servers.redis_cluster() as cluster:
        url = f"tiered://?l2={quote(cluster.url, safe='')}&bus=tracking&l1_timeout=600&key_prefix=pyclu"
        tracked = polycache.Cache(url)
        # A plain cache on the same cluster: it publishes nothing, the primaries report.
        plain = polycache.Cache(f"{cluster.url}?key_prefix=pyclu")
        keys = [f"k{i}" for i in range(30)]  # spread over the three primaries' slots
        for k in keys:
            plain.set(k, "old")
        assert all(tracked.get(k) == "old" for k in keys)
        for k in keys:
            plain.set(k, "new")
        assert eventually(lambda: all(tracked.get(k) == "new" for k in keys))

        async def read(k: str) -> Any:
            return await tracked.aget(k)

        plain.set(keys[0], "newer")
        assert eventually(lambda: asyncio.run(read(keys[0])) == "newer")


# --- stats -------------------------------------------------------------------------------------


def test_stats_count_correctly_under_concurrency(cache: polycache.Cache) -> None:
    @polycache.cached(cache=cache)
    def f(x: int) -> int:
        return x

    counter = iter(range(10**6))

    def work() -> None:
        base = next(counter)
        for i in range(200):
            f((base * 200 + i) % 100)

    run_threads(16, work)
    s = cache.stats()
    assert s["hits"] + s["misses"] == 16 * 200
    assert s["refreshes"] == 100
    assert s["sets"] == 100
    assert {"hits", "misses", "stale_hits", "refreshes", "sets", "deletes", "errors", "evictions", "ops"} <= set(s)


def test_prometheus_text_has_the_same_names_everywhere(cache: polycache.Cache) -> None:
    cache.get("absent")
    text = cache.stats_prometheus("web")
    for name in ("hits", "misses", "stale_hits", "refreshes", "sets", "deletes", "errors", "evictions"):
        assert f"# TYPE polycache_{name}_total counter\n" in text
    assert 'polycache_misses_total{cache="web"} 1\n' in text
    page = polycache.render_prometheus({"a": cache, "b": polycache.Cache("memory://")})
    assert page.count("# TYPE polycache_hits_total counter") == 1
    assert 'polycache_misses_total{cache="b"} 0\n' in page
    assert "polycache_hits_total" in polycache.caches.stats_prometheus()


def test_memoized_values_pickle_like_any_entry(cache: polycache.Cache) -> None:
    @polycache.cached(cache=cache)
    def f() -> dict[str, list[int]]:
        return {"a": [1, 2]}

    f()
    assert pickle.loads(pickle.dumps(f())) == {"a": [1, 2]}
