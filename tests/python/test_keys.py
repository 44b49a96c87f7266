"""keys / iter_keys / delete_pattern (django-redis' names) on polycache.Cache and the
Django face, sync and async, on memory://, file://, sqlite:// and redis://, and memcached's
refusal."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
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
from polycache import _polycache  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

KEYS = ["user:1", "user:2", "user:10", "user:a*b", "team:1", "%_"]


@pytest.fixture(params=["memory", "file", "sqlite", "redis"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    scheme = request.param
    if f"{scheme}://" not in polycache.SCHEMES:
        pytest.skip(f"this wheel was built without the {scheme} feature (POLYCACHE_FEATURES={scheme})")
    if scheme == "memory":
        yield f"memory://keys-test-{time.monotonic_ns()}"
    elif scheme == "redis":
        with servers.redis_server() as server:
            yield server.url
    else:
        with tempfile.TemporaryDirectory() as d:
            yield f"file://{d}/c" if scheme == "file" else f"sqlite://{d}/c.db"


def fill(cache: Any) -> None:
    for key in KEYS:
        cache.set(key, key.upper())


def test_keys_apply_and_strip_prefix_and_version(url: str) -> None:
    cache = polycache.Cache(url, key_prefix="app*")
    other = polycache.Cache(url, key_prefix="appX")  # what an unescaped "app*" would match
    fill(cache)
    other.set("user:1", "other")
    cache.set("user:v2", 2, version=2)
    assert sorted(cache.keys("user:*")) == ["user:1", "user:10", "user:2", "user:a*b"]
    assert sorted(cache.keys("user:?")) == ["user:1", "user:2"]
    assert sorted(cache.keys("user:[0-9]*")) == ["user:1", "user:10", "user:2"]
    assert cache.keys("user:a\\*b") == ["user:a*b"]
    assert cache.keys("%_") == ["%_"]
    assert cache.keys("%") == []
    assert cache.keys("user:*", version=2) == ["user:v2"]
    assert other.keys("*") == ["user:1"]
    assert sorted(cache.iter_keys("*", itersize=2)) == sorted(KEYS)
    assert cache.delete_pattern("user:[0-9]*", itersize=2) == 3
    assert sorted(cache.keys("*")) == ["%_", "team:1", "user:a*b"]
    assert cache.delete_pattern("*") == 3
    assert cache.keys("*") == []
    assert other.get("user:1") == "other"
    assert cache.get("user:v2", version=2) == 2


def test_expired_keys_are_not_listed(url: str) -> None:
    cache = polycache.Cache(url, key_prefix="exp")
    cache.set("short", 1, timeout=0.2)
    cache.set("long", 1, timeout=60)
    deadline = time.monotonic() + 5
    while cache.get("short") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cache.keys("*") == ["long"]


def test_iter_keys_streams_pages(url: str) -> None:
    cache = polycache.Cache(url, key_prefix="pages")
    cache.set_many({f"k{i}": i for i in range(250)})
    scan = cache.iter_keys("k*", itersize=100)
    pages = []
    while (page := scan.next_page()) is not None:
        pages.append(page)
    assert sorted(k for p in pages for k in p) == sorted(f"k{i}" for i in range(250))
    assert len(pages) >= 2
    assert scan.next_page() is None
    assert list(scan) == []


def test_async_twins(url: str) -> None:
    cache = polycache.Cache(url, key_prefix="async")

    async def main() -> None:
        await cache.aset_many({k: 1 for k in KEYS})
        assert sorted(await cache.akeys("user:*")) == ["user:1", "user:10", "user:2", "user:a*b"]
        found = [k async for k in cache.aiter_keys("*", itersize=2)]
        assert sorted(found) == sorted(KEYS)
        assert await cache.adelete_pattern("user:*", itersize=3) == 4
        assert sorted(await cache.akeys("*")) == ["%_", "team:1"]

    asyncio.run(main())


def test_awaited_scans_use_the_backends_async_side(url: str) -> None:
    """redis:// awaits SCAN on its multiplexed connection and memory:// pages in place: no
    call reaches polycache's blocking pool. file:// and sqlite://, which have no async I/O,
    read their pages there (which shows the count sees the pool)."""
    cache = polycache.Cache(url, key_prefix="native")
    cache.set_many({f"k{i}": i for i in range(50)})

    async def main() -> int:
        before = _polycache._blocking_calls()
        assert len(await cache.akeys("k*")) == 50
        assert len({k async for k in cache.aiter_keys("k*", itersize=7)}) == 50
        assert await cache.adelete_pattern("k*", itersize=9) == 50
        return _polycache._blocking_calls() - before

    calls = asyncio.run(main())
    if url.startswith(("redis://", "memory://")):
        assert calls == 0
    else:
        assert calls > 0


def test_one_scan_read_by_turns_with_and_without_await(url: str) -> None:
    cache = polycache.Cache(url, key_prefix="turns")
    cache.set_many({f"k{i}": i for i in range(100)})
    scan = cache.iter_keys("k*", itersize=10)
    seen: list[str] = []

    async def awaited_page() -> list[str] | None:
        return await scan.anext_page()

    turn = 0
    while True:
        page = scan.next_page() if turn % 2 == 0 else asyncio.run(awaited_page())
        if page is None:
            break
        seen.extend(page)
        turn += 1
    assert sorted(seen) == sorted(f"k{i}" for i in range(100))


def test_a_memory_scan_reads_the_live_store_shard_by_shard() -> None:
    """memory:// copies one shard's keys at a time: a scan whose store is emptied after its
    first page returns only the rest of the shard it had copied (the store has at least four
    shards; a scan that copied every key first would return all 5,000)."""
    cache = polycache.Cache("memory://")
    cache.set_many({f"k{i}": 1 for i in range(5000)})
    scan = cache.iter_keys("k*", itersize=10)
    assert len(scan.next_page() or []) == 10
    cache.clear()
    seen = 10
    while (page := scan.next_page()) is not None:
        seen += len(page)
    assert seen < 2500

    cache.set_many({f"k{i}": 1 for i in range(5000)})
    scan = cache.iter_keys("k*", itersize=10)

    async def main() -> int:
        assert len(await scan.anext_page() or []) == 10
        await cache.aclear()
        seen = 10
        while (page := await scan.anext_page()) is not None:
            seen += len(page)
        return seen

    assert asyncio.run(main()) < 2500


def test_django_face(url: str) -> None:
    cache = polycache.django.Cache(url, {"KEY_PREFIX": "dj[1]", "VERSION": 3})
    fill(cache)
    assert sorted(cache.keys("user:*")) == ["user:1", "user:10", "user:2", "user:a*b"]
    assert sorted(cache.iter_keys("team:*")) == ["team:1"]
    assert cache.keys("user:*", version=2) == []
    assert cache.delete_pattern("user:*", itersize=10) == 4

    async def main() -> None:
        assert sorted(await cache.akeys("*")) == ["%_", "team:1"]
        assert [k async for k in cache.aiter_keys("team:*")] == ["team:1"]
        assert await cache.adelete_pattern("*") == 2

    asyncio.run(main())
    with pytest.raises(polycache.UnsupportedOperationError, match="prefix"):
        cache.delete_pattern("*", prefix="other")


def custom_key(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}|{version}|{key}"


def test_custom_key_function_is_refused() -> None:
    cache = polycache.django.Cache("memory://keys-custom", {"KEY_FUNCTION": custom_key})
    cache.set("a", 1)
    for call in (lambda: cache.keys("*"), lambda: cache.iter_keys("*"), lambda: cache.delete_pattern("*")):
        with pytest.raises(polycache.UnsupportedOperationError, match="key function"):
            call()


def test_bad_itersize() -> None:
    cache = polycache.Cache("memory://")
    for bad in (0, -1):
        with pytest.raises(polycache.InvalidKeyError, match="itersize"):
            cache.iter_keys("*", itersize=bad)
        with pytest.raises(polycache.InvalidKeyError, match="itersize"):
            cache.delete_pattern("*", itersize=bad)


def test_memcached_refuses_and_says_why() -> None:
    if "memcached://" not in polycache.SCHEMES:
        pytest.skip("this wheel was built without the memcached feature (POLYCACHE_FEATURES=memcached)")
    with servers.memcached_server() as server:
        cache = polycache.Cache(server.url)
        for call in (lambda: cache.keys("*"), lambda: cache.iter_keys("*"), lambda: cache.delete_pattern("*")):
            with pytest.raises(polycache.UnsupportedOperationError, match="cannot list its keys"):
                call()
        with pytest.raises(polycache.UnsupportedOperationError):
            asyncio.run(cache.akeys("*"))


def test_dummy_lists_nothing() -> None:
    cache = polycache.Cache("dummy://")
    cache.set("a", 1)
    assert cache.keys("*") == []
    assert cache.delete_pattern("*") == 0


def test_the_example_of_the_python_guide_runs() -> None:
    guide = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "python.md")
    with open(guide, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("\n### Keys by pattern\n"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    namespace: dict[str, Any] = {}
    exec(compile(code, guide, "exec"), namespace)
    assert namespace["cache"].keys("*") == ["team:1"]
