"""polycache.Cache on redis://, unix:// and the failure policy, against servers the tests start.

Skipped with a reason when the installed wheel was built without the ``redis`` feature.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import polycache
from polycache import Cache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

pytestmark = pytest.mark.skipif(
    "redis://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the redis feature (POLYCACHE_FEATURES=redis)",
)


class Point:
    """A picklable user object (module level, so pickle can find it)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    with servers.redis_server() as s:
        yield s


@pytest.fixture
def cache(server: servers.Server) -> Iterator[Cache]:
    c = Cache(server.url, key_prefix="py")
    c.clear()
    yield c
    c.clear()


def test_is_remote_and_redacted(server: servers.Server) -> None:
    c = Cache(server.url)
    assert not c.is_local
    assert c.location == server.url


@pytest.mark.parametrize("value", [0, -7, 2**62, "text", "ünï", b"\x00bytes", 1.5, None, [1, "a"], {"k": [1, 2]}, Point(1, 2)])
def test_values_round_trip(cache: Cache, value: Any) -> None:
    cache.set("k", value)
    assert cache.get("k", default="missing") == value


def test_operations(cache: Cache) -> None:
    assert cache.get("a") is None
    assert cache.add("a", 1)
    assert not cache.add("a", 2)
    assert cache.incr("a", 9) == 10
    assert cache.decr("a") == 9
    with pytest.raises(polycache.KeyNotFoundError):
        cache.incr("missing")
    cache.set("s", "text")
    with pytest.raises(polycache.NotAnIntegerError):
        cache.incr("s")
    assert cache.has_key("a")
    assert cache.touch("a", None)
    assert not cache.touch("missing", 10)
    assert cache.delete("a")
    assert not cache.delete("a")
    cache.set("short", "x", timeout=0.05)
    cache.set("gone", "x", timeout=0)
    assert cache.get("gone") is None
    time.sleep(0.15)
    assert cache.get("short") is None


def test_many(cache: Cache) -> None:
    data = {f"k{i}": i for i in range(100)}
    assert cache.set_many(data, timeout=60) == []
    got = cache.get_many([*data, "absent"])
    assert got == data
    cache.delete_many(list(data)[:50])
    assert len(cache.get_many(list(data))) == 50


def test_clear_is_scoped_to_the_prefix(server: servers.Server) -> None:
    mine, theirs = Cache(server.url, key_prefix="mine"), Cache(server.url, key_prefix="theirs")
    mine.set_many({f"k{i}": i for i in range(50)})
    theirs.set("k0", "kept")
    mine.clear()
    assert mine.get_many([f"k{i}" for i in range(50)]) == {}
    assert theirs.get("k0") == "kept"
    theirs.clear()


def test_threads_share_the_pool(server: servers.Server) -> None:
    c = Cache(server.url, key_prefix="threads", options={"max_connections": 4})
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(200):
                c.set(f"{t}-{i}", i)
                assert c.get(f"{t}-{i}") == i
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    c.clear()


def test_async_twins(cache: Cache) -> None:
    async def main() -> Any:
        await cache.aset("k", {"a": 1})
        return await cache.aget("k")

    assert asyncio.run(main()) == {"a": 1}


def test_unix_socket(server: servers.Server) -> None:
    c = Cache(f"unix://{server.extra['socket']}?db=2", key_prefix="unix")
    c.set("k", Point(3, 4))
    assert c.get("k") == Point(3, 4)
    assert not Cache(server.url, key_prefix="unix").has_key("k"), "database 2, not 0"
    c.clear()


def test_password_never_shows() -> None:
    with servers.redis_server("requirepass py-s3cret") as s:
        url = f"redis://:py-s3cret@127.0.0.1:{s.port}/0"
        c = Cache(url)
        c.set("k", 1)
        assert c.get("k") == 1
        assert "py-s3cret" not in c.location and "py-s3cret" not in repr(c)
        bad = Cache(f"redis://:wrong-s3cret@127.0.0.1:{s.port}/0")
        with pytest.raises(polycache.ConfigurationError) as info:
            bad.get("k")
        assert "wrong-s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("location", "options", "named"),
    [
        ("redis://:pw-x@127.0.0.1:99999/0", None, "99999"),
        ("redis://:pw-x@127.0.0.1:6379/db", None, "database"),
        ("redis://:pw-x@127.0.0.1:6379/0", {"bogus": 1}, "bogus"),
        ("redis://:pw-x@127.0.0.1:6379/0", {"socket_timeout": "soon"}, "socket_timeout"),
        ("redis://:pw-x@127.0.0.1:6379/0", {"max_connections": 0}, "max_connections"),
    ],
)
def test_bad_configuration(location: str, options: Any, named: str) -> None:
    with pytest.raises(polycache.ConfigurationError, match=named) as info:
        Cache(location, options=options)
    assert "pw-x" not in str(info.value)


def test_dead_server_fails_closed_fast() -> None:
    c = Cache(f"redis://127.0.0.1:{servers.free_port()}/0")
    started = time.monotonic()
    with pytest.raises(polycache.ConnectionError) as info:
        c.get("k")
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - started < 1.0


def test_fail_open_answers_defaults_and_reports_unstored_writes() -> None:
    c = Cache(f"redis://127.0.0.1:{servers.free_port()}/0", options={"fail_open": True, "breaker_cooldown": 60})
    for _ in range(5):
        assert c.get("k", "default") == "default"
    assert c.set("k", 1) is False
    assert c.get_many(["a", "b"]) == {}
    assert c.stats()["errors"] >= 7


def test_killed_server_raises_connection_error() -> None:
    with servers.redis_server() as s:
        c = Cache(s.url, options={"socket_timeout": 0.5})
        c.set("k", 1)
        s.kill()
        with pytest.raises((polycache.ConnectionError, polycache.TimeoutError)):
            c.get("k")
