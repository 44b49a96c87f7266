"""Tags: ``set(..., tags=[...])``, ``set_many``, ``get_or_set``, ``get_or_set_with``,
``@cached(tags=...)`` and ``polycache.Job`` tags, ``invalidate_tags``, on polycache.Cache
and the Django face, sync and async, on memory:// and redis:// (two handles on one store
stand in for two processes); the race between a computation and an invalidation; bad tags."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure()
django.setup()

import polycache  # noqa: E402
import polycache.django  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield f"memory://tags-test-{time.monotonic_ns()}"
    else:
        if "redis://" not in polycache.SCHEMES:
            pytest.skip("this wheel was built without the redis feature (POLYCACHE_FEATURES=redis)")
        with servers.redis_server() as server:
            yield server.url


def faces(url: str) -> list[Any]:
    """polycache.Cache and the Django face over one store, with one key prefix."""
    return [
        polycache.Cache(url, key_prefix="t"),
        polycache.django.Cache(url, {"KEY_PREFIX": "t"}),
    ]


def test_invalidate_makes_tagged_entries_misses_on_both_faces(url: str) -> None:
    writer, reader = faces(url)
    for a, b in [(writer, reader), (reader, writer)]:
        a.set("page", "v1", tags=["product:42", "home"])
        a.set("other", "v2", tags=["product:7"])
        a.set("plain", "v3")
        a.set_many({"m1": 1, "m2": 2}, tags=["product:42"])
        assert b.get("page") == "v1"
        assert b.get_many(["page", "other", "plain", "m1", "m2"]) == {
            "page": "v1", "other": "v2", "plain": "v3", "m1": 1, "m2": 2
        }
        assert b.invalidate_tags(["product:42"]) is True
        assert a.get("page") is None and b.get("page") is None
        assert b.get_many(["page", "other", "plain", "m1", "m2"]) == {"other": "v2", "plain": "v3"}
        b.invalidate_tags(["product:7", "home"])
        assert a.get("other") is None


def test_async_twins(url: str) -> None:
    async def body() -> None:
        for c in faces(url):
            await c.aset("a", "A", tags=["t1"])
            await c.aset_many({"b": "B"}, tags=["t1"])
            assert await c.aget("a") == "A"
            assert await c.ainvalidate_tags(["t1"]) is True
            assert await c.aget("a") is None
            assert await c.aget_many(["a", "b"]) == {}
            calls: list[int] = []

            def compute() -> str:
                calls.append(1)
                return f"computed{len(calls)}"

            assert await c.aget_or_set("g", compute, tags=["t2"]) == "computed1"
            assert await c.aget_or_set("g", compute, tags=["t2"]) == "computed1"
            await c.ainvalidate_tags(["t2"])
            assert await c.aget_or_set("g", compute, tags=["t2"]) == "computed2"
            await c.adelete("g")

    asyncio.run(body())


def test_get_or_set_and_get_or_set_with(url: str) -> None:
    for c in faces(url):  # one store and prefix: each face starts afresh
        c.delete("k")
        assert c.get_or_set("k", "first", tags=["x"]) == "first"
        assert c.get_or_set("k", "second", tags=["x"]) == "first"
        c.invalidate_tags(["x"])
        # The invalidated entry is still there for add(): get_or_set replaces it.
        assert c.get_or_set("k", "third", tags=["x"]) == "third"
        assert c.get("k") == "third"
    c = polycache.Cache(url, key_prefix="gw")
    assert c.get_or_set_with("w", lambda: 1, tags=["y"]) == 1
    assert c.get_or_set_with("w", lambda: 2, tags=["y"]) == 1
    c.invalidate_tags(["y"])
    assert c.get_or_set_with("w", lambda: 3, tags=["y"]) == 3

    async def body() -> None:
        await c.ainvalidate_tags(["y"])
        assert await c.aget_or_set_with("w", lambda: 4, tags=["y"]) == 4

        async def loader() -> int:
            return 5

        await c.ainvalidate_tags(["y"])
        assert await c.aget_or_set_with("w", loader, tags=["y"]) == 5
        assert await c.aget("w") == 5

    asyncio.run(body())


def test_a_value_computed_across_an_invalidation_is_never_served(url: str) -> None:
    c = polycache.Cache(url, key_prefix="race")
    other = polycache.Cache(url, key_prefix="race")  # another process's handle
    started, go = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        assert go.wait(10)
        return "from old data"

    results: list[Any] = []
    t = threading.Thread(target=lambda: results.append(c.get_or_set_with("r", slow, tags=["p"])))
    t.start()
    assert started.wait(10)
    other.invalidate_tags(["p"])
    go.set()
    t.join()
    assert results == ["from old data"]
    assert c.get("r") is None and other.get("r") is None
    # The Django-style get_or_set and the async paths read the versions first too.
    for face in faces(url):
        def racing(face: Any = face) -> str:
            face.invalidate_tags(["q"])  # tags are per key prefix: the face's own
            return "stale"

        face.delete("s")
        assert face.get_or_set("s", racing, tags=["q"]) == "stale"
        assert face.get("s") is None

    async def body() -> None:
        async def aracing() -> str:
            await other.ainvalidate_tags(["z"])
            return "stale"

        assert await c.aget_or_set_with("as", aracing, tags=["z"]) == "stale"
        assert await c.aget("as") is None
        assert await c.aget_or_set("ag", aracing, tags=["z"]) == "stale"
        assert await c.aget("ag") is None

    asyncio.run(body())


def test_cached_decorator_with_tags(url: str) -> None:
    c = polycache.Cache(url, key_prefix="deco")
    calls: list[int] = []

    @polycache.cached(cache=c, tags=lambda n: [f"n:{n}", "all"])
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    @polycache.cached(cache=c, tags=["all"])
    async def cube(n: int) -> int:
        calls.append(-n)
        return n * n * n

    assert square(3) == 9 and square(3) == 9 and square(4) == 16
    assert calls == [3, 4]
    c.invalidate_tags(["n:3"])
    assert square(3) == 9 and square(4) == 16
    assert calls == [3, 4, 3], "only the entry tagged n:3 is computed again"

    async def body() -> None:
        assert await cube(2) == 8
        assert await cube(2) == 8
        await c.ainvalidate_tags(["all"])
        assert await cube(2) == 8

    asyncio.run(body())
    assert calls == [3, 4, 3, -2, -2]
    assert square(4) == 16 and calls[-1] == 4, "'all' was invalidated too"
    with pytest.raises(TypeError):
        polycache.cached(cache=(c.get, c.set), tags=["x"])(lambda: 1)
    with pytest.raises(TypeError):
        polycache.cached(cache=c, tags="not-a-list")(lambda: 1)


class Report(polycache.Job):
    tags = ["reports"]

    def __init__(self, cache: polycache.Cache) -> None:
        super().__init__(cache=cache)
        self.calls = 0

    def fetch(self, *args: Any) -> str:
        self.calls += 1
        return f"v{self.calls}"


def test_job_values_carry_the_jobs_tags(url: str) -> None:
    c = polycache.Cache(url, key_prefix="job")
    job = Report(c)
    assert job.get("r") == "v1"
    assert job.get("r") == "v1"
    c.invalidate_tags(["reports"])
    assert job.get("r") == "v2"


@pytest.mark.parametrize("face", [0, 1])
def test_bad_tags_are_clear_errors_and_store_nothing(face: int) -> None:
    c = faces(f"memory://tags-bad-{time.monotonic_ns()}")[face]
    for bad, error in [
        ([""], ValueError),
        (["x" * 201], ValueError),
        ([f"t{i}" for i in range(65)], ValueError),
        ([1], TypeError),
        ("product:42", TypeError),
        (b"product:42", TypeError),
        (42, TypeError),
    ]:
        with pytest.raises(error):
            c.set("k", "v", tags=bad)
        with pytest.raises(error):
            c.set_many({"k": "v"}, tags=bad)
        with pytest.raises(error):
            c.get_or_set("k", "v", tags=bad)
        with pytest.raises(error):
            c.invalidate_tags(bad)
        assert not c.has_key("k"), f"nothing stored for {bad!r}"
    with pytest.raises(polycache.InvalidKeyError):
        c.set("k", "v", tags=[""])
    with pytest.raises(ValueError):
        c.set("k", "v", nx=True, tags=["x"])
    c.set("k", "v", tags=["x" * 200] + [f"t{i}" for i in range(63)])
    assert c.get("k") == "v"


def test_an_invalidated_entry_is_absent_to_every_method(url: str) -> None:
    for c in faces(url):
        c.set("live", "L", 60, tags=["keep"])
        c.set("dead", "D", 60, tags=["gone"])
        for key in ("replaced", "counted", "created"):
            c.set(key, 5, 60, tags=["gone"])
        c.invalidate_tags(["gone"])
        assert not c.set("replaced", 6, 60, xx=True), "replace stores nothing"
        assert c.get("replaced") is None
        with pytest.raises(ValueError):
            c.incr("counted")
        with pytest.raises(ValueError):
            c.decr("counted")
        assert c.incr("created", ignore_key_check=True) == 1
        assert c.set("live", "L", 60, xx=True), "replace of a live tagged entry"
        with pytest.raises(TypeError):
            c.incr("live")
        assert c.has_key("live") and not c.has_key("dead")
        assert c.ttl("dead") == c.ttl("never-stored")
        assert c.ttl("live") != c.ttl("never-stored")
        assert c.touch("live", 60) and not c.touch("dead", 60)
        assert not c.add("live", "L2")
        assert c.add("dead", "new") is True
        assert c.get("dead") == "new" and c.has_key("dead")
        assert not c.add("dead", "newer")

        async def body() -> None:
            await c.aset("adead", "D", 60, tags=["agone"])
            await c.ainvalidate_tags(["agone"])
            assert not await c.ahas_key("adead")
            assert await c.attl("adead") == await c.attl("never-stored")
            assert not await c.atouch("adead", 60)
            assert await c.aadd("adead", "new") is True
            assert await c.aget("adead") == "new"
            await c.aset("acount", 5, 60, tags=["agone2"])
            await c.ainvalidate_tags(["agone2"])
            assert not await c.aset("acount", 6, 60, xx=True)
            with pytest.raises(ValueError):
                await c.aincr("acount")
            assert await c.aincr("acount", ignore_key_check=True) == 1

        asyncio.run(body())
        c.delete_many(["live", "dead", "adead", "acount", "replaced", "counted", "created"])


def test_get_or_set_reads_with_the_tags_it_names(url: str) -> None:
    for c in faces(url):
        c.set("both", "B", tags=["x", "y"])
        assert c.get_or_set("both", "unused", tags=["x"]) == "B"
        c.invalidate_tags(["y"])  # a tag the caller did not name
        assert c.get_or_set("both", "again", tags=["x"]) == "again"
        assert asyncio.run(c.aget_or_set("both", "unused", tags=["x", "y"])) == "again"
        c.invalidate_tags(["x"])
        assert asyncio.run(c.aget_or_set("both", "third", tags=["x"])) == "third"
        c.delete("both")


def _redis_reads(port: int) -> int:
    """The read commands (GET, MGET) the Redis on ``port`` ran since its last RESETSTAT."""
    info = servers._redis_command(port, "INFO", "commandstats").decode()
    calls = 0
    for line in info.splitlines():
        name, _, stats = line.partition(":")
        if name in ("cmdstat_get", "cmdstat_mget"):
            calls += int(stats.split(",")[0].removeprefix("calls="))
    return calls


def test_a_plain_read_of_a_tagged_entry_is_one_redis_request() -> None:
    """Counted by the server: a plain get of a tagged entry this handle wrote or read, and
    an async @cached(tags=) hit, read the value and the tags' versions in one request."""
    if "redis://" not in polycache.SCHEMES:
        pytest.skip("this wheel was built without the redis feature (POLYCACHE_FEATURES=redis)")
    with servers.redis_server() as server:

        def reads(call: Any) -> int:
            servers._redis_command(server.port, "CONFIG", "RESETSTAT")
            call()
            return _redis_reads(server.port)

        writer, reader = faces(server.url)
        writer.set("page", "v1", tags=["a", "b"])
        assert reads(lambda: writer.get("page")) == 1, "the writer knows the entry's tags"
        assert reads(lambda: reader.get("page")) == 2, "the first read learns them"
        assert reads(lambda: reader.get("page")) == 1
        assert reads(lambda: asyncio.run(reader.aget("page"))) == 1
        assert reads(lambda: reader.get_many(["page", "other"])) == 1
        writer.invalidate_tags(["b"])
        assert reads(lambda: reader.get("page")) == 1
        assert reader.get("page") is None

        calls: list[int] = []

        def memoized(cache: polycache.Cache) -> Any:
            @polycache.cached(cache=cache, tags=lambda n: [f"n:{n}"])
            async def double(n: int) -> int:
                calls.append(n)
                return 2 * n

            return double

        # Two handles (two processes): the second never saw the entry, yet its hit is one
        # request, as the wrapper names the tags when it reads.
        first = memoized(polycache.Cache(server.url, key_prefix="adeco"))
        second = memoized(polycache.Cache(server.url, key_prefix="adeco"))
        assert asyncio.run(first(5)) == 10
        assert reads(lambda: asyncio.run(second(5))) == 1, "an async tagged hit"
        assert calls == [5]
        writer.invalidate_tags(["n:5"])
        assert asyncio.run(second(5)) == 10 and calls == [5], "another key prefix's tag"
        polycache.Cache(server.url, key_prefix="adeco").invalidate_tags(["n:5"])
        assert asyncio.run(second(5)) == 10 and calls == [5, 5]
