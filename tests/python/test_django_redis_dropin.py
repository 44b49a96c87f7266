"""A Django app written for django-redis, run on django-redis and on polycache.django.Cache.

The calls below are the ones django-redis users make beyond Django's cache API (TTL control,
``nx``/``xx``, ``incr(ignore_key_check=True)``, key iteration, ``delete_pattern``, locks). Each
runs on both backends against one Redis, under different prefixes, and the answers must be
equal in value and type. The data-structure commands are compared the same way in
test_redis_structures.py; the documented differences are checked at the end.
"""

from __future__ import annotations

import datetime
import itertools
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import polycache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

pytestmark = pytest.mark.skipif(
    "redis://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the redis feature (POLYCACHE_FEATURES=redis)",
)

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    pytest.importorskip("django_redis")
    with servers.redis_server() as s:
        yield s


def _pair(url: str) -> tuple[Any, Any]:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django_redis.cache import RedisCache  # type: ignore[import-untyped]

    from polycache.django import Cache

    n = next(_prefixes)
    return RedisCache(url, {"KEY_PREFIX": f"dr{n}"}), Cache(url, {"KEY_PREFIX": f"pc{n}"})


IN_AN_HOUR = datetime.datetime.now() + datetime.timedelta(hours=1)

#: (method, args, kwargs, how to compare): "same" compares answers; "sorted" compares sorted
#: lists; "near" allows a second between two remaining lifetimes read at slightly different
#: times; None runs the call on both without comparing (set's answer is Django's None here).
CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any], Any]] = [
    ("set", ("a", 1), {}, None),
    ("set", ("forever", "x"), {"timeout": None}, None),
    ("ttl", ("a",), {}, "near"),
    ("ttl", ("forever",), {}, "same"),
    ("ttl", ("missing",), {}, "same"),
    ("pttl", ("forever",), {}, "same"),
    ("pttl", ("missing",), {}, "same"),
    ("set", ("a", 2), {"nx": True}, "same"),
    ("set", ("new", 2), {"nx": True}, "same"),
    ("set", ("absent", 3), {"xx": True}, "same"),
    ("set", ("a", 4), {"xx": True}, "same"),
    ("get", ("a",), {}, "same"),
    ("get", ("absent",), {}, "same"),
    ("expire", ("a", 100), {}, "same"),
    ("ttl", ("a",), {}, "near"),
    ("expire", ("missing", 100), {}, "same"),
    ("pexpire", ("a", 50_000), {}, "same"),
    ("ttl", ("a",), {}, "near"),
    ("expire_at", ("a", IN_AN_HOUR), {}, "same"),
    ("persist", ("a",), {}, "same"),
    ("ttl", ("a",), {}, "same"),
    ("persist", ("missing",), {}, "same"),
    ("incr", ("counter",), {"ignore_key_check": True}, "same"),
    ("incr", ("counter", 5), {"ignore_key_check": True}, "same"),
    ("incr", ("counter", 5), {}, "same"),
    ("set", ("user:1", "ann"), {}, None),
    ("set", ("user:2", "bob"), {}, None),
    ("set", ("user:10", "cy"), {}, None),
    ("set", ("session:1", "s"), {}, None),
    ("keys", ("user:*",), {}, "sorted"),
    ("keys", ("user:?",), {}, "sorted"),
    ("keys", ("nothing:*",), {}, "same"),
    ("iter_keys", ("user:*",), {"itersize": 1}, "sorted"),
    ("delete_pattern", ("user:*",), {"itersize": 2}, "same"),
    ("keys", ("user:*",), {}, "same"),
    ("get", ("session:1",), {}, "same"),
]


def _answer(how: Any, answer: Any) -> Any:
    if how == "sorted":
        return sorted(answer)
    return answer


def test_django_redis_calls_answer_the_same(server: servers.Server) -> None:
    theirs, ours = _pair(server.url)
    for method, args, kwargs, how in CALLS:
        expected = getattr(theirs, method)(*args, **kwargs)
        got = getattr(ours, method)(*args, **kwargs)
        if how is None:
            continue
        if how == "near":
            assert isinstance(got, int) and isinstance(expected, int), (method, args, got, expected)
            assert abs(got - expected) <= 1, (method, args, kwargs, got, expected)
            continue
        assert _answer(how, got) == _answer(how, expected), (method, args, kwargs, got, expected)
        if how == "same":
            assert type(got) is type(expected), (method, args, kwargs, got, expected)


def test_locks_behave_the_same(server: servers.Server) -> None:
    theirs, ours = _pair(server.url)
    for cache in (theirs, ours):
        lock = cache.lock("job", timeout=10)
        assert lock.acquire(blocking=False) is True
        assert lock.locked() is True
        assert lock.owned() is True
        other = cache.lock("job", timeout=10)
        assert other.acquire(blocking=False) is False
        assert other.owned() is False
        assert lock.extend(5) is True
        lock.release()
        assert lock.locked() is False
        with cache.lock("job", timeout=10) as held:
            assert held.locked() is True
        assert cache.lock("job").locked() is False


def test_the_documented_differences(server: servers.Server) -> None:
    theirs, ours = _pair(server.url)
    # A plain set: django-redis answers True, polycache Django's None (BaseCache's contract).
    assert theirs.set("k", 1) is True
    assert ours.set("k", 1) is None
    # Both refuse nx and xx together; polycache with a ValueError naming both.
    with pytest.raises(ValueError, match="nx"):
        ours.set("k", 1, nx=True, xx=True)
