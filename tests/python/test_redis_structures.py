"""django-redis' hash, set and sorted-set methods on ``polycache.django.Cache``.

Every call runs on django-redis (the pinned release) and on polycache against the same test
Redis, each under its own prefix, and the answers are compared; then each reads what the
other wrote under a shared prefix (same bytes: members compare equal). The methods
django-redis lacks (``zmscore``, ``zrevrank``, ``zremrangebyrank``) are compared with
redis-py's answers on the same keys.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import polycache
from polycache.exceptions import InvalidArgumentError, UnsupportedOperationError

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


def _configure() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()


def theirs_at(url: str, prefix: str) -> Any:
    _configure()
    from django_redis.cache import RedisCache  # type: ignore[import-untyped]

    return RedisCache(url, {"KEY_PREFIX": prefix, "VERSION": 2})


def ours_at(url: str, prefix: str, **options: Any) -> Any:
    _configure()
    from polycache.django import Cache

    return Cache(url, {"KEY_PREFIX": prefix, "VERSION": 2, "OPTIONS": options})


@pytest.fixture
def pair(server: servers.Server) -> tuple[Any, Any]:
    n = next(_prefixes)
    return theirs_at(server.url, f"dr{n}"), ours_at(server.url, f"pc{n}")


#: Calls in order: (method, args, kwargs). Members mix ints, text and objects.
SETS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("sadd", ("s", 1, "two", (3, "x"), 4.5), {}),
    ("sadd", ("s", 1), {}),
    ("scard", ("s",), {}),
    ("smembers", ("s",), {}),
    ("sismember", ("s", "two"), {}),
    ("sismember", ("s", "nope"), {}),
    ("smismember", ("s", 1, "nope", (3, "x")), {}),
    ("sadd", ("t", "two", 9), {}),
    ("sdiff", ("s", "t"), {}),
    ("sinter", ("s", "t"), {}),
    ("sunion", ("s", "t"), {}),
    ("sdiffstore", ("d", "s", "t"), {}),
    ("sinterstore", ("i", "s", "t"), {}),
    ("sunionstore", ("u", "s", "t"), {}),
    ("smembers", ("u",), {}),
    ("smove", ("s", "t", 1), {}),
    ("smove", ("s", "t", "absent"), {}),
    ("srem", ("t", 1, "nope"), {}),
    ("sscan", ("u",), {}),
    ("sscan", ("u",), {"match": "two"}),
    ("sadd", ("v", 5, 7, 8), {"version": 9}),
    ("scard", ("v",), {}),
    ("scard", ("v",), {"version": 9}),
    ("spop", ("missing",), {}),
    ("spop", ("missing",), {"count": 2}),
    ("srandmember", ("missing",), {}),
    ("sadd", ("one", "only"), {}),
    ("spop", ("one",), {}),
    ("sadd", ("one", "only"), {}),
    ("srandmember", ("one",), {}),
    ("srandmember", ("one",), {"count": 3}),
    ("spop", ("one",), {"count": 3}),
]

ZSETS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("zadd", ("z", {"a": 1, "b": 2.5, 3: 3, ("t",): -1}), {}),
    ("zadd", ("z", {"a": 5}), {"nx": True}),
    ("zadd", ("z", {"a": 5, "new": 0}), {"xx": True, "ch": True}),
    ("zadd", ("z", {"b": 1}), {"gt": True, "ch": True}),
    ("zadd", ("z", {"b": 1}), {"lt": True, "ch": True}),
    ("zadd", ("z", {"a": 0.5}), {"incr": True}),
    ("zadd", ("z", {"zz": 0.5}), {"incr": True, "xx": True}),
    ("zcard", ("z",), {}),
    ("zcount", ("z", "-inf", "+inf"), {}),
    ("zcount", ("z", "(1", 3), {}),
    ("zincrby", ("z", 2, "b"), {}),
    ("zscore", ("z", "a"), {}),
    ("zscore", ("z", 3), {}),
    ("zscore", ("z", "nope"), {}),
    ("zrank", ("z", "a"), {}),
    ("zrank", ("z", "nope"), {}),
    ("zrange", ("z", 0, -1), {}),
    ("zrange", ("z", 0, -1), {"withscores": True}),
    ("zrange", ("z", 0, 1), {"desc": True, "withscores": True}),
    ("zrange", ("z", 0, -1), {"withscores": True, "score_cast_func": str}),
    ("zrevrange", ("z", 0, -1), {"withscores": True}),
    ("zrangebyscore", ("z", 0, 10), {}),
    ("zrangebyscore", ("z", "-inf", "+inf"), {"start": 1, "num": 2, "withscores": True}),
    ("zrevrangebyscore", ("z", 10, 0), {"withscores": True}),
    ("zrevrangebyscore", ("z", "+inf", "-inf"), {"start": 0, "num": 1}),
    ("zrem", ("z", "a", "nope"), {}),
    ("zpopmin", ("z",), {}),
    ("zpopmax", ("z",), {"count": 2}),
    ("zremrangebyscore", ("z", "-inf", 0), {}),
    ("zpopmin", ("z",), {"count": 5}),
    ("zpopmin", ("z",), {}),
    ("zpopmax", ("z",), {"count": 1}),
]

HASHES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("hset", ("h", "f1", "value"), {}),
    ("hset", ("h", "f1", 12), {}),
    ("hset", ("h",), {"mapping": {"f2": [1, 2], "f3": 3}}),
    ("hlen", ("h",), {}),
    ("hkeys", ("h",), {}),
    ("hexists", ("h", "f2"), {}),
    ("hexists", ("h", "nope"), {}),
    ("hdel", ("h", "f2"), {}),
    ("hdel", ("h", "f2"), {}),
    ("hlen", ("h",), {}),
    ("hset", ("h", "v", "x"), {"version": 9}),
    ("hlen", ("h",), {"version": 9}),
]


def _comparable(answer: Any) -> Any:
    # Hash fields come back in no fixed order.
    return sorted(answer) if isinstance(answer, list) and all(isinstance(a, str) for a in answer) else answer


@pytest.mark.parametrize("calls", [SETS, ZSETS, HASHES], ids=["sets", "sorted-sets", "hashes"])
def test_answers_match_django_redis(pair: tuple[Any, Any], calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
    theirs, ours = pair
    for method, args, kwargs in calls:
        expected = getattr(theirs, method)(*args, **kwargs)
        got = getattr(ours, method)(*args, **kwargs)
        assert _comparable(got) == _comparable(expected), (method, args, kwargs)
        assert type(got) is type(expected), (method, args, kwargs, got, expected)


@pytest.mark.parametrize("calls", [SETS, ZSETS, HASHES], ids=["sets", "sorted-sets", "hashes"])
def test_awaited_answers_match_django_redis(
    pair: tuple[Any, Any], calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
) -> None:
    theirs, ours = pair

    async def run() -> None:
        for method, args, kwargs in calls:
            expected = getattr(theirs, method)(*args, **kwargs)
            got = await getattr(ours, "a" + method)(*args, **kwargs)
            assert _comparable(got) == _comparable(expected), (method, args, kwargs)

    asyncio.run(run())


def test_sscan_iter_matches(pair: tuple[Any, Any]) -> None:
    theirs, ours = pair
    members = list(range(300)) + [f"m{i}" for i in range(300)]
    theirs.sadd("big", *members)
    ours.sadd("big", *members)
    assert set(ours.sscan_iter("big", count=50)) == set(theirs.sscan_iter("big", count=50)) == set(members)

    async def collect() -> set[Any]:
        return {m async for m in ours.asscan_iter("big", count=50)}

    assert asyncio.run(collect()) == set(members)


def test_each_reads_what_the_other_wrote(server: servers.Server) -> None:
    prefix = f"shared{next(_prefixes)}"
    theirs, ours = theirs_at(server.url, prefix), ours_at(server.url, prefix)
    ours.sadd("s", 1, "a", ("k", 1))
    assert theirs.smembers("s") == {1, "a", ("k", 1)}
    assert theirs.sismember("s", ("k", 1))
    assert theirs.srem("s", 1) == 1
    theirs.sadd("s", 2, "b")
    assert ours.smembers("s") == {"a", ("k", 1), 2, "b"}
    theirs.zadd("z", {"x": 1, 7: 2})
    assert ours.zrange("z", 0, -1, withscores=True) == [("x", 1.0), (7, 2.0)]
    assert ours.zscore("z", 7) == 2.0
    ours.zadd("z", {8: 3})
    assert theirs.zrank("z", 8) == 2
    ours.hset("h", "f", {"deep": True})
    assert theirs.hkeys("h") == ["f"]
    theirs.hset("h", "g", 5)
    assert sorted(ours.hkeys("h")) == ["f", "g"]
    assert ours.hexists("h", "g")


def test_methods_django_redis_lacks_match_redis_py(server: servers.Server) -> None:
    import redis

    ours = ours_at(server.url, f"pc{next(_prefixes)}")
    raw = redis.Redis.from_url(server.url)
    ours.zadd("z", {"a": 1, "b": 2, "c": 3})
    key = ours.make_key("z")
    members: list[Any] = [ours._member("a"), ours._member("nope"), ours._member("c")]
    assert ours.zmscore("z", ["a", "nope", "c"]) == raw.zmscore(key, members)
    assert ours.zmscore("z", ["a", "nope", "c"]) == [1.0, None, 3.0]
    assert ours.zrevrank("z", "a") == raw.zrevrank(key, ours._member("a")) == 2
    assert ours.zrevrank("z", "nope") is None
    assert ours.zremrangebyrank("z", 0, 1) == 2
    assert raw.zcard(key) == 1
    raw.close()


def test_sorted_set_members_are_always_serialized(server: servers.Server) -> None:
    # django-redis 7 pickles int members of sorted sets (allow_int=False), plain ints of sets.
    prefix = f"shared{next(_prefixes)}"
    theirs, ours = theirs_at(server.url, prefix), ours_at(server.url, prefix)
    ours.zadd("z", {5: 1})
    theirs.zadd("z", {5: 2})
    assert ours.zcard("z") == 1
    ours.sadd("s", 5)
    theirs.sadd("s", 5)
    assert theirs.scard("s") == 1


def test_unsupported_off_redis() -> None:
    _configure()
    from polycache.django import Cache

    for location in ("memory://structures", "dummy://"):
        cache = Cache(location, {})
        with pytest.raises(UnsupportedOperationError, match="redis://"):
            cache.sadd("s", 1)
        with pytest.raises(UnsupportedOperationError, match="redis://"):
            cache.zrange("z", 0, -1)
        with pytest.raises(UnsupportedOperationError, match="redis://"):
            cache.hlen("h")
        with pytest.raises(UnsupportedOperationError, match="redis://"):
            asyncio.run(cache.asmembers("s"))
        with pytest.raises(UnsupportedOperationError):
            list(cache.sscan_iter("s"))


def test_bad_input_is_a_clear_error(server: servers.Server, pair: tuple[Any, Any]) -> None:
    _, ours = pair
    with pytest.raises(InvalidArgumentError, match="nx or xx"):
        ours.zadd("z", {"a": 1}, nx=True, xx=True)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        ours.zadd("z", {"a": 1, "b": 2}, incr=True)
    with pytest.raises(InvalidArgumentError):
        ours.zadd("z", {})
    with pytest.raises(InvalidArgumentError, match="start and num"):
        ours.zrangebyscore("z", 0, 1, start=1)
    with pytest.raises(InvalidArgumentError):
        ours.zcount("z", True, 2)
    with pytest.raises(InvalidArgumentError):
        ours.spop("s", count="2")
    with pytest.raises(InvalidArgumentError):
        ours.hset("h")
    with pytest.raises(InvalidArgumentError):
        ours.hset("h", "f")
    with pytest.raises(InvalidArgumentError):
        ours.hset("h", object(), 1)
    with pytest.raises(polycache.UnsupportedOperationError):
        ours._redis_command("FLUSHALL", [])
    with pytest.raises(polycache.InvalidKeyError):
        ours._redis_command("SCARD", [b"not-a-key"])
    with pytest.raises(TypeError):
        ours._redis_command("SADD", ["k", True])
    # A set where a sorted set is expected: Redis' own error, raised.
    ours.sadd("wrong", 1)
    with pytest.raises(polycache.BackendError):
        ours.zcard("wrong")
    small = ours_at(server.url, f"small{next(_prefixes)}", max_value_size=10)
    with pytest.raises(polycache.ValueTooLargeError):
        small.sadd("s", "x" * 100)


def test_fail_open_answers_none() -> None:
    port = servers.free_port()
    cache = ours_at(f"redis://127.0.0.1:{port}/0", "down", fail_open=True, connect_timeout=0.2)
    assert cache.sadd("s", 1) is None
    assert cache.smembers("s") is None
    assert cache.zpopmin("z") is None
    assert asyncio.run(cache.azcard("z")) is None
    assert list(cache.sscan_iter("s")) == []
    closed = ours_at(f"redis://127.0.0.1:{port}/0", "down", connect_timeout=0.2)
    with pytest.raises(polycache.ConnectionError):
        closed.sadd("s", 1)


def test_close_is_a_no_op_as_in_django_redis(pair: tuple[Any, Any]) -> None:
    _, ours = pair
    ours.sadd("s", 1)
    ours.close()
    assert ours.scard("s") == 1


def test_polycache_cache_has_them_too(server: servers.Server) -> None:
    prefix = f"shared{next(_prefixes)}"
    theirs = theirs_at(server.url, prefix)
    plain = polycache.Cache(server.url, key_prefix=prefix, version=2)
    assert plain.sadd("s", 1, "a") == 2
    assert theirs.smembers("s") == {1, "a"}
    theirs.zadd("z", {"x": 1.5})
    assert plain.zrange("z", 0, -1, withscores=True) == [("x", 1.5)]
    assert asyncio.run(plain.ahlen("h")) == 0
    with pytest.raises(UnsupportedOperationError):
        polycache.Cache("memory://").scard("s")
