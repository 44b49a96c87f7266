"""django-redis' lifetime operations on both Python faces and every server scheme: ``ttl`` /
``pttl``, ``expire`` / ``pexpire`` / ``expire_at`` / ``pexpire_at`` / ``persist``,
``set(nx=, xx=)`` and ``incr(ignore_key_check=True)``, with their bad input.

Answers follow django-redis (``django_redis/client/default.py``): ``ttl`` is None for a key
that never expires and 0 for a missing one; ``expire`` with 0 or less removes the key, as
Redis' ``EXPIRE`` does; ``set(nx=True)`` with a timeout of 0 or less stores nothing and
answers whether the key was absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import polycache
from polycache import Cache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

SCHEMES = ["memory", "sqlite", "redis", "memcached"]
SERVER: dict[str, Callable[[], contextlib.AbstractContextManager[servers.Server]]] = {
    "redis": servers.redis_server, "memcached": servers.memcached_server,
}
FACES = ["polycache", "django"]


@pytest.fixture(scope="module")
def started() -> Iterator[dict[str, servers.Server]]:
    """The servers, started on first use and stopped with the module."""
    with contextlib.ExitStack() as stack:

        class Lazy(dict[str, servers.Server]):
            def __missing__(self, name: str) -> servers.Server:
                self[name] = stack.enter_context(SERVER[name]())
                return self[name]

        yield Lazy()


def django_cache(location: str, prefix: str) -> Any:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from polycache.django import Cache as DjangoCache

    return DjangoCache(location, {"KEY_PREFIX": prefix})


@pytest.fixture(params=[(s, f) for s in SCHEMES for f in FACES], ids=lambda p: f"{p[0]}-{p[1]}")
def c(request: pytest.FixtureRequest, started: dict[str, servers.Server], tmp_path: Any) -> Any:
    scheme, face = request.param
    if scheme == "sqlite":
        location = f"sqlite://{tmp_path}/cache.db"
    elif scheme == "memory":
        location = "memory://"
    else:
        location = started[scheme].url
    prefix = f"ttl-{face}-{time.monotonic_ns()}"
    return Cache(location, key_prefix=prefix) if face == "polycache" else django_cache(location, prefix)


def test_ttl_and_pttl_answer_as_django_redis(c: Any) -> None:
    assert c.ttl("missing") == 0
    assert c.pttl("missing") == 0
    c.set("forever", 1, None)
    assert c.ttl("forever") is None
    assert c.pttl("forever") is None
    c.set("k", 1, 600)
    ttl, pttl = c.ttl("k"), c.pttl("k")
    assert isinstance(ttl, int) and isinstance(pttl, int)
    assert 0 < ttl <= 600
    assert 0 < pttl <= 600_000


def test_expire_pexpire_and_persist(c: Any) -> None:
    c.set("k", 1, None)
    assert c.expire("k", 600) is True
    assert 0 < c.ttl("k") <= 600
    assert c.pexpire("k", 300_000) is True
    assert 0 < c.pttl("k") <= 300_000
    assert c.persist("k") is True
    assert c.ttl("k") is None
    assert c.get("k") == 1
    assert c.expire("k", 600) is True
    assert c.expire("k", None) is True, "None never expires, as for touch"
    assert c.ttl("k") is None
    assert c.expire("missing", 10) is False
    assert c.pexpire("missing", 10) is False
    assert c.persist("missing") is False
    # Zero or negative removes the key, as Redis' EXPIRE does; the answer is whether it was there.
    for expire, timeout in [(c.expire, 0), (c.expire, -5), (c.pexpire, 0), (c.pexpire, -1)]:
        c.set("k", 1, None)
        assert expire("k", timeout) is True
        assert not c.has_key("k")
        assert c.ttl("k") == 0


def test_expire_at_takes_datetimes_and_epoch_numbers(c: Any) -> None:
    c.set("k", 1, None)
    assert c.expire_at("k", time.time() + 600) is True
    assert 0 < c.ttl("k") <= 600
    assert c.pexpire_at("k", int((time.time() + 300) * 1000)) is True
    assert 0 < c.ttl("k") <= 300
    aware = datetime.now(timezone.utc) + timedelta(seconds=500)
    assert c.expire_at("k", aware) is True
    assert 0 < c.ttl("k") <= 500
    # A naive datetime is local time, as datetime.timestamp() and redis-py read it.
    assert c.pexpire_at("k", datetime.now() + timedelta(seconds=400)) is True
    assert 0 < c.ttl("k") <= 400
    assert c.expire_at("missing", aware) is False
    # A time past removes the key (EXPIREAT).
    assert c.expire_at("k", datetime.now(timezone.utc) - timedelta(seconds=5)) is True
    assert not c.has_key("k")
    c.set("k", 1, None)
    assert c.pexpire_at("k", 0) is True
    assert not c.has_key("k")


def test_set_nx_and_xx(c: Any) -> None:
    assert c.set("k", "a", nx=True) is True
    assert c.set("k", "b", nx=True) is False
    assert c.get("k") == "a"
    assert c.set("k", "b", xx=True) is True
    assert c.get("k") == "b"
    assert c.set("absent", "b", xx=True) is False
    assert c.get("absent") is None
    assert c.set("k", "c", 600, xx=True) is True
    assert 0 < c.ttl("k") <= 600
    # A timeout of 0 or less: nx stores nothing and answers whether the key was absent; xx
    # removes the key and answers whether it was there (django-redis).
    assert c.set("k", "d", timeout=0, nx=True) is False
    assert c.get("k") == "c"
    assert c.set("k", "d", timeout=-1, xx=True) is True
    assert not c.has_key("k")
    assert c.set("k", "d", timeout=0, xx=True) is False
    with pytest.raises(ValueError, match="not both"):
        c.set("k", "v", nx=True, xx=True)
    assert not c.has_key("k"), "refused before anything is stored"
    # Without nx or xx, each face answers as before: Django's None, polycache.Cache's True.
    assert c.set("plain", 1) is (None if not isinstance(c, Cache) else True)


def test_incr_with_ignore_key_check_creates_the_key(c: Any) -> None:
    with pytest.raises(ValueError):
        c.incr("n")
    assert c.incr("n", 5, ignore_key_check=True) == 5
    assert c.incr("n", ignore_key_check=True) == 6
    assert c.incr("n") == 7
    assert c.get("n") == 7
    assert c.ttl("n") is None, "created without an expiry, as Redis' INCRBY creates it"
    c.set("text", "abc")
    with pytest.raises(polycache.NotAnIntegerError):
        c.incr("text", ignore_key_check=True)
    assert c.get("text") == "abc"


def test_async_twins_answer_as_the_sync_methods(c: Any) -> None:
    async def scenario() -> list[Any]:
        return [
            await c.aset("k", 1, None, nx=True),
            await c.aset("k", 2, None, xx=True),
            await c.attl("k"),
            await c.apttl("missing"),
            await c.aexpire("k", 600),
            0 < await c.attl("k") <= 600,
            await c.apexpire("k", 600_000),
            await c.aexpire_at("k", time.time() + 600),
            await c.apexpire_at("k", (time.time() + 600) * 1000),
            await c.apersist("k"),
            await c.attl("k"),
            await c.aincr("n", 3, ignore_key_check=True),
            await c.aget("k"),
        ]

    assert asyncio.run(scenario()) == [True, True, None, 0, True, True, True, True, True, True, None, 3, 2]


@pytest.mark.parametrize("face", FACES)
def test_bad_arguments_are_clear_errors(face: str) -> None:
    c: Any = Cache("memory://") if face == "polycache" else django_cache("memory://", "bad")
    c.set("k", 1, None)
    calls: list[Callable[[], object]] = [
        lambda: c.expire_at("k", "tomorrow"),
        lambda: c.pexpire_at("k", None),
        lambda: c.expire("k", "soon"),
        lambda: c.incr("k", ignore_key_check="yes"),
        lambda: c.set("k", 1, nx="yes"),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError, match="NaN"):
        c.expire_at("k", float("nan"))
    if face == "polycache":
        for op in (c.ttl, c.pttl, c.persist):
            with pytest.raises(TypeError, match="must be str"):
                op(1)
    assert c.get("k") == 1, "nothing changed"
    # close() ends nothing: pools close with the cache, as before.
    c.close()
    assert c.ttl("k") is None


def test_dead_server_is_a_connection_error() -> None:
    c = Cache(f"redis://127.0.0.1:{servers.free_port()}/0")
    calls: list[Callable[[], object]] = [
        lambda: c.ttl("k"),
        lambda: c.expire("k", 5),
        lambda: c.persist("k"),
        lambda: c.set("k", 1, xx=True),
        lambda: c.incr("k", ignore_key_check=True),
    ]
    for call in calls:
        with pytest.raises(polycache.ConnectionError):
            call()
