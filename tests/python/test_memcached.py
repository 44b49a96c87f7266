"""polycache.Cache on memcached:// (several servers, a unix socket), against servers the tests start.

Skipped with a reason when the installed wheel was built without the ``memcached`` feature.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

import pytest

import polycache
from polycache import Cache
from polycache.exceptions import (
    KeyNotFoundError,
    NotAnIntegerError,
    UnsupportedOperationError,
    ValueTooLargeError,
)

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

pytestmark = pytest.mark.skipif(
    "memcached://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the memcached feature (POLYCACHE_FEATURES=memcached)",
)

DAY = 86_400


@pytest.fixture(scope="module")
def trio() -> Iterator[list[servers.Server]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(servers.memcached_server()) for _ in range(3)]


def ring_url(group: list[servers.Server], query: str = "") -> str:
    return "memcached://" + ",".join(f"127.0.0.1:{s.port}" for s in group) + query


@pytest.fixture
def cache(trio: list[servers.Server]) -> Iterator[Cache]:
    c = Cache(ring_url(trio))
    c.clear()
    yield c
    c.clear()


def test_is_remote(cache: Cache, trio: list[servers.Server]) -> None:
    assert not cache.is_local
    assert cache.location == ring_url(trio)


@pytest.mark.parametrize("value", [0, -7, 2**62, "text", "ünï", b"\x00bytes", 1.5, None, [1, "a"], {"k": [1, 2]}])
def test_values_round_trip(cache: Cache, value: object) -> None:
    cache.set("v", value)
    assert cache.get("v", "missing") == value


def test_django_operations(cache: Cache) -> None:
    assert cache.get("a") is None
    assert cache.get("a", 5) == 5
    assert cache.add("a", 1)
    assert not cache.add("a", 2)
    assert cache.incr("a", 10) == 11
    assert cache.decr("a") == 10
    assert cache.has_key("a")
    assert cache.touch("a", None)
    assert not cache.touch("nothing")
    assert cache.delete("a")
    assert not cache.delete("a")
    with pytest.raises(KeyNotFoundError):
        cache.incr("a")
    with pytest.raises(ValueError):
        cache.decr("a")

    cache.set("gone", 1, timeout=0)
    assert cache.get("gone") is None
    mapping = {f"k{i}": i for i in range(200)}
    assert cache.set_many(mapping) == []
    got = cache.get_many([*mapping, "absent"])
    assert got == mapping
    cache.delete_many(list(mapping)[:100])
    assert len(cache.get_many(list(mapping))) == 100
    assert cache.get_or_set("lazy", lambda: "computed") == "computed"
    assert cache.get_or_set("lazy", "other") == "computed"
    stats = cache.stats()
    assert stats["hits"] > 0 and stats["misses"] > 0 and stats["errors"] == 0


def test_counters_follow_memcached(cache: Cache) -> None:
    cache.set("n", 3)
    # memcached clamps a decrement at zero instead of going negative.
    assert cache.decr("n", 10) == 0
    cache.set("neg", -5)
    with pytest.raises(NotAnIntegerError, match="negative"):
        cache.incr("neg")
    cache.set("text", "abc")
    with pytest.raises(TypeError):
        cache.incr("text")


def test_odd_keys_round_trip_without_warnings(cache: Cache) -> None:
    keys = ["with space", "tab\tkey", "new\nline", "café", "日本語", "emoji 🎉", "x" * 300, "\x7f", ""]
    for i, k in enumerate(keys):
        cache.set(k, i)
    assert [cache.get(k) for k in keys] == list(range(len(keys)))
    assert cache.get_many(keys) == {k: i for i, k in enumerate(keys)}
    assert cache.incr("café") == 4
    cache.delete_many(keys)
    assert cache.get_many(keys) == {}


def test_ttls(cache: Cache) -> None:
    cache.set("month", "kept", timeout=31 * DAY)
    cache.set("year", "kept", timeout=365 * DAY)
    cache.set("never", "kept", timeout=None)
    cache.set("short", "gone", timeout=0.2)
    time.sleep(2.5)
    assert cache.get_many(["month", "year", "never", "short"]) == {"month": "kept", "year": "kept", "never": "kept"}


def test_too_large_values(cache: Cache) -> None:
    cache.set("big", "old")
    with pytest.raises(ValueTooLargeError, match="item size limit"):
        cache.set("big", b"x" * (1 << 20))
    assert cache.get("big") == "old"
    assert cache.set_many({"a": 1, "b": b"x" * (1 << 20)}) == ["b"]
    assert cache.get_many(["a", "b"]) == {"a": 1}


def test_clear_needs_an_empty_prefix_or_namespaces(trio: list[servers.Server]) -> None:
    prefixed = Cache(ring_url(trio), key_prefix="app")
    prefixed.set("k", 1)
    with pytest.raises(UnsupportedOperationError, match="namespace=true"):
        prefixed.clear()
    assert prefixed.get("k") == 1

    url = ring_url(trio, "?namespace=true&namespace_refresh=0")
    app = Cache(url, key_prefix="app")
    other = Cache(url, key_prefix="other")
    app.set("k", "app")
    other.set("k", "other")
    app.clear()
    assert app.get("k") is None
    assert other.get("k") == "other"
    assert Cache(url, key_prefix="app").get("k") is None


def test_unix_socket() -> None:
    with servers.memcached_server(unix_socket=True) as s:
        assert s.url.startswith("memcached:///")
        c = Cache(s.url)
        c.set("k", {"a": 1})
        assert c.get("k") == {"a": 1}
        assert c.get_many(["k", "x"]) == {"k": {"a": 1}}


def test_options_are_checked(trio: list[servers.Server]) -> None:
    with pytest.raises(ValueError, match="socket_timeout"):
        Cache(ring_url(trio, "?socket_timeout=0"))
    with pytest.raises(ValueError, match="unknown option"):
        Cache(ring_url(trio, "?dead_retyr=1"))
    Cache(ring_url(trio), options={"connect_timeout": 0.5, "dead_retry": 5, "pool_size": 4})


def test_a_dead_server_fails_fast_or_misses_when_failing_open() -> None:
    with contextlib.ExitStack() as stack:
        group = [stack.enter_context(servers.memcached_server()) for _ in range(3)]
        url = ring_url(group, "?dead_retry=30&socket_timeout=0.5&connect_timeout=0.5")
        # The cache-wide breaker is off so that the dead server's keys do not stop the others'.
        failing_open = Cache(url, options={"fail_open": True, "breaker_threshold": 0})
        strict = Cache(url, options={"breaker_threshold": 0})
        keys = [f"key-{i}" for i in range(60)]
        failing_open.set_many({k: k for k in keys})
        group[0].kill()
        alive = [k for k in keys if failing_open.get(k) == k]
        dead = [k for k in keys if k not in alive]
        assert 5 < len(dead) < 55, "roughly a third of the keys lived on the killed server"
        for k in dead:
            assert failing_open.get(k, "default") == "default"
            assert failing_open.set(k, "new") is False
        for k in dead:
            start = time.monotonic()
            with pytest.raises(ConnectionError):
                strict.get(k)
            assert time.monotonic() - start < 1.0
        assert all(strict.get(k) == k for k in alive)


def test_pylibmc_ketama_agrees_on_placement(trio: list[servers.Server]) -> None:
    pylibmc = pytest.importorskip("pylibmc")
    client = pylibmc.Client([f"127.0.0.1:{s.port}" for s in trio], behaviors={"ketama_weighted": True})
    values = {f":1:placed-{i}": i for i in range(300)}
    client.set_multi(values)
    c = Cache(ring_url(trio))
    got = c.get_many([f"placed-{i}" for i in range(300)])
    assert got == {f"placed-{i}": i for i in range(300)}, "polycache looked for some keys on another server"
    # And each server holds the keys polycache would put there: read them one server at a time.
    per_server = [Cache(f"memcached://127.0.0.1:{s.port}").get_many([f"placed-{i}" for i in range(300)]) for s in trio]
    assert sum(len(found) for found in per_server) == 300
    assert all(len(found) > 30 for found in per_server)


def test_pymemcache_reads_and_writes_the_same_entries(trio: list[servers.Server]) -> None:
    from pymemcache.client.base import Client

    server = trio[0]
    client = Client(("127.0.0.1", server.port))
    c = Cache(f"memcached://127.0.0.1:{server.port}")
    client.set(":1:shared", b"41")
    assert c.incr("shared") == 42
    assert client.get(":1:shared") == b"42"
    c.set("from-polycache", 7)
    assert client.get(":1:from-polycache") == b"7"
    client.close()
