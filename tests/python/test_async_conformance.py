"""Every ``a``-method on every scheme, checked against its sync twin, on asyncio and uvloop.

One scripted sequence of operations runs twice on the same scheme: once through the sync
methods, once through their awaitable twins. Both must give the same answers (or raise the
same exception classes). Then redis:// gets a cancellation storm, and the awaitables are
checked against a closed or absent event loop and a dead server.

A scheme whose backend this wheel was built without is skipped with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import uvloop

import polycache
from polycache import Cache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

SCHEMES = ["memory", "dummy", "file", "sqlite", "postgres", "redis", "memcached", "tiered"]
#: The cargo feature each scheme needs, and the server it talks to.
FEATURE = {"file": "file://", "sqlite": "sqlite://", "postgres": "postgres://", "redis": "redis://",
           "memcached": "memcached://", "tiered": "redis://"}
SERVER: dict[str, Callable[[], contextlib.AbstractContextManager[servers.Server]]] = {
    "postgres": servers.postgres_server, "redis": servers.redis_server, "memcached": servers.memcached_server,
}

#: One event loop flavour per run: asyncio's own loop, and uvloop's.
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(coro: Coroutine[Any, Any, Any], flavour: str = "asyncio") -> Any:
    loop = LOOPS[flavour]()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture(scope="module")
def started() -> Iterator[dict[str, servers.Server]]:
    """The servers, started on first use and stopped with the module."""
    with contextlib.ExitStack() as stack:
        running: dict[str, servers.Server] = {}

        class Lazy(dict[str, servers.Server]):
            def __missing__(self, name: str) -> servers.Server:
                running[name] = stack.enter_context(SERVER[name]())
                self[name] = running[name]
                return running[name]

        yield Lazy()


@pytest.fixture
def location(request: pytest.FixtureRequest, started: dict[str, servers.Server], tmp_path: Any) -> str:
    scheme: str = request.param
    feature = FEATURE.get(scheme)
    if feature is not None and feature not in polycache.SCHEMES:
        pytest.skip(f"this polycache wheel was built without {feature}")
    if scheme == "memory":
        return "memory://?max_entries=1000"
    if scheme == "dummy":
        return "dummy://"
    if scheme == "file":
        return f"file://{tmp_path}/files"
    if scheme == "sqlite":
        return f"sqlite://{tmp_path}/cache.db"
    if scheme == "tiered":
        l2 = started["redis"].url
        return f"tiered://?l1={quote('memory://?max_entries=100', safe='')}&l2={quote(l2, safe='')}"
    if scheme == "memcached":
        # A clear scoped to the key prefix needs memcached's namespaces.
        return started[scheme].url + "?namespace=true"
    return started[scheme].url


# (method, args, kwargs): the sequence both twins run, from an empty cache.
SCRIPT: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("get", ("k",), {}),
    ("get", ("k", "default"), {}),
    ("set", ("k", {"v": 1}), {}),
    ("get", ("k",), {}),
    ("add", ("k", 2), {}),
    ("add", ("n", 2), {}),
    ("has_key", ("n",), {}),
    ("touch", ("n", None), {}),
    ("delete", ("n",), {}),
    ("delete", ("n",), {}),
    ("has_key", ("n",), {}),
    ("set_many", ({"a": 1, "b": 2, "c": [3]},), {}),
    ("get_many", (["a", "b", "c", "x"],), {}),
    ("incr", ("a", 10), {}),
    ("decr", ("a",), {}),
    ("incr", ("missing",), {}),
    ("delete_many", (["a", "b"],), {}),
    ("get_many", (["a", "b", "c"],), {}),
    ("set", ("v", "x"), {}),
    ("incr_version", ("v",), {}),
    ("get", ("v",), {"version": 2}),
    ("decr_version", ("v",), {"version": 2}),
    ("get", ("v",), {}),
    ("get_or_set", ("g", "computed"), {}),
    ("get_or_set", ("g", "other"), {}),
    ("set", ("z", "old"), {}),
    ("set", ("z", "new"), {"timeout": 0}),
    ("get", ("z",), {}),
    ("set", ("big", "x" * 2000), {}),
    ("get", (1,), {}),
    ("set", ("f", lambda: 1), {}),
    # django-redis' lifetime operations.
    ("ttl", ("missing",), {}),
    ("set", ("p", 1, None), {}),
    ("ttl", ("p",), {}),
    ("pttl", ("p",), {}),
    ("expire", ("p", 600), {}),
    ("persist", ("p",), {}),
    ("pexpire", ("missing", 600), {}),
    ("expire_at", ("p", 0), {}),
    ("pexpire_at", ("p", "soon"), {}),
    ("set", ("x", 1), {"xx": True}),
    ("set", ("x", 1), {"nx": True}),
    ("set", ("x", 2), {"xx": True}),
    ("set", ("x", 3), {"nx": True, "xx": True}),
    ("get", ("x",), {}),
    ("incr", ("ic", 2), {"ignore_key_check": True}),
    ("incr", ("ic", 2), {"ignore_key_check": True}),
    ("clear", (), {}),
    ("get", ("k",), {}),
    ("close", (), {}),
]


def bound(cache: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any]:
    """`cache.method(*args, **kwargs)`, to call later."""
    return lambda: getattr(cache, method)(*args, **kwargs)


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", call())
    except Exception as err:  # the exception class is the answer being compared
        return ("raised", type(err).__name__)


async def outcome_async(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", await call())
    except Exception as err:
        return ("raised", type(err).__name__)


@pytest.mark.parametrize("location", SCHEMES, indirect=True)
@pytest.mark.parametrize("flavour", sorted(LOOPS))
def test_every_a_method_answers_as_its_sync_twin(location: str, flavour: str) -> None:
    cache = Cache(location + ("&" if "?" in location else "?") + "max_value_size=1000", key_prefix="conformance")
    cache.clear()
    sync = [outcome(bound(cache, m, a, k)) for m, a, k in SCRIPT]
    cache.clear()

    async def awaited() -> list[Any]:
        return [await outcome_async(bound(cache, "a" + m, a, k)) for m, a, k in SCRIPT]

    assert run(awaited(), flavour) == sync
    # The script exercised what it means to: a hit, a miss, an error and a write refused.
    if not location.startswith("dummy"):
        assert ("ok", {"v": 1}) in sync
    assert ("raised", "TypeError") in sync
    assert ("raised", "ValueTooLargeError") in sync
    assert ("raised", "KeyNotFoundError") in sync


@pytest.mark.parametrize("location", ["memory", "redis"], indirect=True)
def test_django_async_api_answers_as_its_sync_twin(location: str) -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from polycache.django import Cache as DjangoCache

    cache = DjangoCache(location, {"KEY_PREFIX": "dj"})
    script = [(m, a, k) for m, a, k in SCRIPT if m not in {"get_or_set", "incr_version", "decr_version"}
              and (m, a) != ("get", (1,))]
    script += [("get_or_set", ("g", "computed"), {}), ("incr_version", ("k",), {}), ("decr_version", ("k",), {"version": 2})]
    cache.clear()
    cache.set("k", 1)
    sync = [outcome(bound(cache, m, a, k)) for m, a, k in script]
    cache.clear()
    cache.set("k", 1)

    async def awaited() -> list[Any]:
        return [await outcome_async(bound(cache, "a" + m, a, k)) for m, a, k in script]

    assert run(awaited()) == sync
    assert ("ok", {"v": 1}) in sync


def test_awaitables_are_coroutines_tasks_accept() -> None:
    cache = Cache("memory://")

    async def scenario() -> Any:
        await cache.aset("k", "v")
        aw = cache.aget("k")
        assert asyncio.iscoroutine(aw)
        return await asyncio.create_task(aw)

    assert run(scenario()) == "v"


@pytest.mark.parametrize("location", ["redis"], indirect=True)
@pytest.mark.parametrize("flavour", sorted(LOOPS))
def test_a_cancellation_storm_leaves_every_other_reply_right(location: str, flavour: str) -> None:
    cache = Cache(location, key_prefix="storm")
    cache.set_many({f"k{i}": f"value-{i}" for i in range(256)})

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(cache.aget(f"k{i}")) for i in range(256)]
        await asyncio.sleep(0)
        for t in tasks[::2]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, r in enumerate(results):
            if i % 2:
                assert r == f"value-{i}", (i, r)
            else:
                assert isinstance(r, asyncio.CancelledError) or r == f"value-{i}", (i, r)
        later: list[Any] = await asyncio.gather(*(cache.aget(f"k{i}") for i in range(256)))
        assert later == [f"value-{i}" for i in range(256)]
        # The mix of writes and reads after the storm: every counter exact.
        await cache.aset("n", 0)
        await asyncio.gather(*(cache.aincr("n") for _ in range(256)))
        assert await cache.aget("n") == 256

    run(scenario(), flavour)


@pytest.mark.parametrize("location", ["redis"], indirect=True)
def test_an_awaitable_made_outside_a_loop_starts_in_the_loop_that_awaits_it(location: str) -> None:
    cache = Cache(location, key_prefix="outside")
    cache.set("k", "v")
    assert asyncio.run(cache.aget("k")) == "v"
    # Stepped with no loop running at all: the await raises asyncio's own error.
    aw = cache.aget("k")
    with pytest.raises(RuntimeError, match="no running event loop"):
        aw.send(None)


@pytest.mark.parametrize("location", ["redis"], indirect=True)
def test_an_await_on_a_closed_loop_raises_and_a_new_loop_works(location: str) -> None:
    import redis

    cache = Cache(location, key_prefix="closed")
    cache.set("k", "v")
    # The server holds every command for a while: the get is still in flight when its loop
    # closes.
    redis.Redis.from_url(location).execute_command("CLIENT", "PAUSE", "300", "ALL")  # type: ignore[no-untyped-call]
    loop = asyncio.new_event_loop()

    async def start() -> Any:
        return cache.aget("k")

    started = loop.run_until_complete(start())
    loop.close()

    async def finish() -> Any:
        return await started

    # The operation's loop is gone: awaiting it elsewhere raises, it does not hang.
    with pytest.raises(RuntimeError):
        asyncio.run(finish())
    assert asyncio.run(cache.aget("k")) == "v"


def test_a_dead_server_raises_from_the_await() -> None:
    if "redis://" not in polycache.SCHEMES:
        pytest.skip("this polycache wheel was built without redis://")
    cache = Cache(f"redis://127.0.0.1:{servers.free_port()}/0", options={"socket_timeout": 0.5})

    async def scenario() -> None:
        aw = cache.aget("k")
        with pytest.raises(polycache.ConnectionError):
            await aw
        with pytest.raises(TypeError):
            await cache.aget(1)  # type: ignore[arg-type]

    run(scenario())


def test_a_fail_open_cache_answers_a_miss_from_the_await() -> None:
    if "redis://" not in polycache.SCHEMES:
        pytest.skip("this polycache wheel was built without redis://")
    cache = Cache(f"redis://127.0.0.1:{servers.free_port()}/0", options={"fail_open": True})

    async def scenario() -> None:
        assert await cache.aget("k", "miss") == "miss"
        assert await cache.aset("k", 1) is False

    run(scenario())


def test_a_file_cache_awaits_on_the_blocking_pool() -> None:
    if "file://" not in polycache.SCHEMES:
        pytest.skip("this polycache wheel was built without file://")
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(f"file://{d}")
        assert not cache.is_local

        async def scenario() -> list[Any]:
            await asyncio.gather(*(cache.aset(f"k{i}", i) for i in range(64)))
            return list(await asyncio.gather(*(cache.aget(f"k{i}") for i in range(64))))

        assert run(scenario(), "uvloop") == list(range(64))


@pytest.mark.parametrize("location", ["redis"], indirect=True)
def test_the_async_example_of_the_python_guide_runs(location: str) -> None:
    guide = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "python.md")
    with open(guide, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("\n## Async\n"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    assert "redis://127.0.0.1:6379/0" in code
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("redis://127.0.0.1:6379/0", location), guide, "exec"), namespace)
    assert namespace["cache"].get("profile:7") == {"id": 7}


@pytest.mark.parametrize("location", ["redis", "file"], indirect=True)
def test_async_memoized_functions_and_loaders_on_a_remote_cache(location: str) -> None:
    cache = Cache(location, key_prefix="memo")
    cache.clear()
    calls: list[int] = []

    @polycache.cached(timeout=60, cache=cache)
    async def square(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0)
        return n * n

    def load() -> str:
        calls.append(-1)
        return "loaded"

    async def scenario() -> None:
        assert await asyncio.gather(*(square(7) for _ in range(8))) == [49] * 8
        # An await whose lookup missed before the first value was stored may compute too
        # (the lookups run concurrently on the blocking pool); once stored, every call hits.
        computed = calls.count(7)
        assert computed >= 1
        assert await square(7) == 49
        assert calls.count(7) == computed
        assert await cache.aget_or_set_with("k", load) == "loaded"
        assert await cache.aget_or_set_with("k", load) == "loaded"

    run(scenario(), "uvloop")
    assert calls.count(-1) == 1
