"""The async twins, under plain asyncio.run."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

import polycache
from polycache import Cache


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_async_twins_exist_for_every_method(cache: Cache) -> None:
    for name in (
        "get", "set", "add", "get_many", "set_many", "delete", "delete_many", "has_key", "touch",
        "incr", "decr", "get_or_set", "clear", "incr_version", "decr_version", "close",
    ):
        twin = getattr(Cache, "a" + name)
        if name == "get_or_set":
            assert inspect.iscoroutinefunction(twin)
            continue
        args = {"get_many": (["k"],), "delete_many": (["k"],), "set_many": ({"k": 1},), "set": ("k", 1),
                "add": ("k", 1), "clear": (), "close": ()}.get(name, ("k",))
        awaitable = twin(cache, *args)
        # A native awaitable: a coroutine object as asyncio counts them, complete at once here.
        assert asyncio.iscoroutine(awaitable), name
        awaitable.close()


def test_async_basic_operations(cache: Cache) -> None:
    async def scenario() -> None:
        assert await cache.aget("k") is None
        assert await cache.aget("k", "d") == "d"
        await cache.aset("k", {"v": 1})
        assert await cache.aget("k") == {"v": 1}
        assert await cache.aadd("k", 2) is False
        assert await cache.aadd("new", 2) is True
        assert await cache.ahas_key("new") is True
        assert await cache.atouch("new", None) is True
        assert await cache.adelete("new") is True
        assert await cache.adelete("new") is False
        assert await cache.aset_many({"a": 1, "b": 2}) == []
        assert await cache.aget_many(["a", "b", "c"]) == {"a": 1, "b": 2}
        assert await cache.aincr("a", 10) == 11
        assert await cache.adecr("a") == 10
        await cache.adelete_many(["a", "b"])
        assert await cache.aget_many(["a", "b"]) == {}
        await cache.aset("v", "x")
        assert await cache.aincr_version("v") == 2
        assert await cache.aget("v", version=2) == "x"
        assert await cache.adecr_version("v", version=2) == 1
        await cache.aclear()
        assert await cache.aget("v") is None
        await cache.aclose()

    run(scenario())


def test_async_timeouts(cache: Cache) -> None:
    async def scenario() -> None:
        await cache.aset("k", "old")
        await cache.aset("k", "new", timeout=0)
        assert await cache.aget("k") is None
        await cache.aset("k", "v", timeout=0.05)
        await asyncio.sleep(0.2)
        assert await cache.aget("k") is None

    run(scenario())


def test_async_errors(cache: Cache) -> None:
    async def scenario() -> None:
        with pytest.raises(polycache.KeyNotFoundError):
            await cache.aincr("missing")
        with pytest.raises(TypeError):
            await cache.aget(1)  # type: ignore[arg-type]
        with pytest.raises(polycache.SerializationError):
            await cache.aset("k", lambda: 1)
        assert await cache.ahas_key("k") is False

    run(scenario())


def test_aget_or_set_sync_and_async_defaults(cache: Cache) -> None:
    calls: list[str] = []

    def sync_default() -> str:
        calls.append("sync")
        return "sync value"

    async def async_default() -> str:
        calls.append("async")
        await asyncio.sleep(0)
        return "async value"

    async def scenario() -> None:
        assert await cache.aget_or_set("s", sync_default) == "sync value"
        assert await cache.aget_or_set("s", sync_default) == "sync value"
        assert await cache.aget_or_set("a", async_default) == "async value"
        assert await cache.aget_or_set("a", async_default) == "async value"
        assert await cache.aget_or_set("p", [1]) == [1]
        assert await cache.aget_or_set("z", "v", timeout=0) == "v"
        assert await cache.ahas_key("z") is False

    run(scenario())
    assert calls == ["sync", "async"]
    assert cache.get("a") == "async value"


def test_async_concurrent_incr(cache: Cache) -> None:
    async def scenario() -> None:
        await cache.aset("n", 0)
        await asyncio.gather(*(cache.aincr("n") for _ in range(500)))
        assert await cache.aget("n") == 500

    run(scenario())


def test_async_on_a_subclass_instance_uses_native_methods() -> None:
    c = polycache.Cache("dummy://")

    async def scenario() -> None:
        await c.aset("k", 1)
        assert await c.aget("k", "miss") == "miss"

    run(scenario())
