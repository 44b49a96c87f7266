"""polycache.Cache on postgres://, against a private PostgreSQL server the tests start.

Skipped with a reason when the installed wheel was built without the ``postgres`` feature.
"""

from __future__ import annotations

import os
import subprocess
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
    "postgres://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the postgres feature (POLYCACHE_FEATURES=postgres)",
)


class Point:
    """A picklable user object (module level, so pickle can find it)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    with servers.postgres_server() as s:
        yield s


@pytest.fixture
def cache(server: servers.Server) -> Iterator[Cache]:
    c = Cache(f"{server.url}?table=py_cache", key_prefix="py")
    c.clear()
    yield c
    c.clear()
    c.close()


def test_is_remote_and_has_its_location(server: servers.Server) -> None:
    c = Cache(f"{server.url}?table=py_cache&unlogged=true")
    assert not c.is_local
    assert c.location == f"{server.url}?table=py_cache&unlogged=true"


@pytest.mark.parametrize("value", [0, -7, 2**62, "text", "ünï", b"\x00bytes", 1.5, None, [1, "a"], {"k": [1, 2]}, Point(1, 2)])
def test_values_round_trip(cache: Cache, value: Any) -> None:
    cache.set("v", value)
    assert cache.get("v", default="missing") == value


def test_operations(cache: Cache) -> None:
    assert cache.get("nope", default=42) == 42
    assert cache.add("a", 1)
    assert not cache.add("a", 2)
    assert cache.incr("a", 10) == 11
    assert cache.decr("a") == 10
    with pytest.raises(ValueError):
        cache.incr("missing")
    cache.set("word", "abc")
    with pytest.raises(polycache.NotAnIntegerError):
        cache.incr("word")
    cache.set("big", 2**63 - 1)
    with pytest.raises(OverflowError):
        cache.incr("big")
    assert cache.has_key("a")
    assert cache.touch("a", 100)
    cache.set_many({"x": 1, "y": {"nested": True}}, timeout=None)
    assert cache.get_many(["x", "y", "nope"]) == {"x": 1, "y": {"nested": True}}
    cache.delete_many(["x", "y"])
    assert cache.get_many(["x", "y"]) == {}
    cache.set("short", "x", timeout=0.05)
    time.sleep(0.15)
    assert cache.get("short") is None


def test_clear_is_scoped_to_the_prefix(server: servers.Server) -> None:
    a = Cache(f"{server.url}?table=py_scoped", key_prefix="a")
    b = Cache(f"{server.url}?table=py_scoped", key_prefix="b")
    a.set("k", 1)
    b.set("k", 2)
    a.clear()
    assert a.get("k") is None
    assert b.get("k") == 2


def test_threads_and_processes_incr_exactly(server: servers.Server, cache: Cache) -> None:
    cache.set("n", 0)

    def work() -> None:
        for _ in range(100):
            cache.incr("n")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("n") == 400
    script = (
        "import sys, polycache\n"
        "c = polycache.Cache(sys.argv[1], key_prefix='py')\n"
        "for _ in range(150):\n"
        "    c.incr('n')\n"
    )
    url = f"{server.url}?table=py_cache"
    procs = [subprocess.Popen([sys.executable, "-c", script, url]) for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    assert cache.get("n") == 1000


def test_unreachable_server_raises_connection_error_without_the_password() -> None:
    port = servers.free_port()
    c = Cache(f"postgres://app:s3cret@127.0.0.1:{port}/db?breaker_threshold=0&connect_timeout=2")
    assert "s3cret" not in c.location
    started = time.monotonic()
    with pytest.raises(polycache.ConnectionError) as info:
        c.get("k")
    assert isinstance(info.value, ConnectionError)
    # Bounds a hang, not speed: a refused connection must not wait for anything longer than
    # the configured connect_timeout (2 s); the margin is for a loaded machine.
    assert time.monotonic() - started < 2 + 10
    assert "s3cret" not in str(info.value)
    failing_open = Cache(f"postgres://app:s3cret@127.0.0.1:{port}/db?fail_open=true")
    assert failing_open.get("k", default="miss") == "miss"


@pytest.mark.parametrize(
    ("location", "named"),
    [
        ("postgres://app:s3cret@/db", "host"),
        ("postgres://app:s3cret@127.0.0.1:5432/db?table=a;b", "table"),
        ("postgres://app:s3cret@127.0.0.1:5432/db?unlogged=maybe", "unlogged"),
        ("postgres://app:s3cret@127.0.0.1:5432/db?sslmode=maybe", "sslmode"),
    ],
)
def test_bad_locations_are_configuration_errors(location: str, named: str) -> None:
    with pytest.raises(polycache.ConfigurationError, match=named) as info:
        Cache(location)
    assert "s3cret" not in str(info.value)


def test_create_table_creates_it_ahead_of_use(server: servers.Server) -> None:
    url = f"{server.url}?table=py_deployed"
    polycache.create_table(url)
    polycache.create_table(url)  # idempotent, like createcachetable
    c = Cache(url)
    c.set("k", {"deployed": True})
    assert c.get("k") == {"deployed": True}
    c.clear()
    c.close()
    with pytest.raises(polycache.ConfigurationError, match="table"):
        polycache.create_table(f"{server.url}?table=a;b")
    port = servers.free_port()
    with pytest.raises(polycache.ConnectionError) as info:
        polycache.create_table(f"postgres://app:s3cret@127.0.0.1:{port}/db")
    assert "s3cret" not in str(info.value)
