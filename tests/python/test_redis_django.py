"""Django's own RedisCache and polycache share one Redis: each reads what the other wrote.

Both use the same KEY_PREFIX and VERSION, so both address ``{prefix}:{version}:{key}``;
polycache's serializer writes what Django's RedisSerializer writes (ints as ASCII decimal,
everything else pickled).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import polycache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

pytestmark = pytest.mark.skipif(
    "redis://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the redis feature (POLYCACHE_FEATURES=redis)",
)

PREFIX, VERSION = "site", 3


class Article:
    """A model-like object, as a Django project caches them (module level, so pickle finds it)."""

    def __init__(self, pk: int, title: str, published: datetime.date, tags: list[str]) -> None:
        self.pk, self.title, self.published, self.tags = pk, title, published, tags

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Article) and vars(self) == vars(other)


VALUES: list[Any] = [
    0,
    42,
    -7,
    2**63 - 1,
    "text",
    "ünïcode ✓",
    "",
    b"\x00raw bytes\xff",
    1.25,
    True,
    None,
    {"a": 1, "nested": {"b": [1, 2]}},
    [1, "two", 3.0],
    (1, 2),
    Decimal("1.10"),
    Article(1, "Hello", datetime.date(2024, 5, 1), ["news", "redis"]),
]


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    pytest.importorskip("redis")
    with servers.redis_server() as s:
        yield s


@pytest.fixture
def django_cache(server: servers.Server) -> Any:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": server.url,
                    "KEY_PREFIX": PREFIX,
                    "VERSION": VERSION,
                }
            }
        )
    from django.core.cache.backends.redis import RedisCache

    c = RedisCache(server.url, {"KEY_PREFIX": PREFIX, "VERSION": VERSION, "TIMEOUT": 300})
    yield c
    c.close()


@pytest.fixture
def ours(server: servers.Server) -> polycache.Cache:
    c = polycache.Cache(server.url, key_prefix=PREFIX, version=VERSION)
    c.clear()
    return c


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_polycache_reads_what_django_wrote(django_cache: Any, ours: polycache.Cache, value: Any) -> None:
    django_cache.set("from-django", value)
    assert ours.get("from-django", "missing") == value
    assert ours.has_key("from-django")


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_django_reads_what_polycache_wrote(django_cache: Any, ours: polycache.Cache, value: Any) -> None:
    ours.set("from-polycache", value)
    assert django_cache.get("from-polycache", "missing") == value
    assert django_cache.has_key("from-polycache")


def test_many_both_ways(django_cache: Any, ours: polycache.Cache) -> None:
    theirs = {f"d{i}": VALUES[i] for i in range(len(VALUES))}
    mine = {f"p{i}": VALUES[i] for i in range(len(VALUES))}
    django_cache.set_many(theirs)
    ours.set_many(mine)
    # A stored None is an entry (a pickled None), so both return it, as Django does.
    assert ours.get_many(list(theirs)) == theirs
    assert django_cache.get_many(list(mine)) == mine
    ours.delete_many(list(theirs))
    assert django_cache.get_many(list(theirs)) == {}


def test_incr_on_each_others_ints(django_cache: Any, ours: polycache.Cache) -> None:
    django_cache.set("counter", 10)
    assert ours.incr("counter", 5) == 15
    assert django_cache.get("counter") == 15
    assert django_cache.incr("counter", 1) == 16
    assert ours.get("counter") == 16
    ours.set("mine", 100)
    assert django_cache.decr("mine", 1) == 99
    assert ours.decr("mine", 9) == 90
    with pytest.raises(ValueError):
        ours.incr("nobody-wrote-this")


def test_ttl_touch_and_delete_agree(django_cache: Any, ours: polycache.Cache) -> None:
    ours.set("ttl", "x", timeout=100)
    ttl = django_cache.ttl("ttl") if hasattr(django_cache, "ttl") else None
    assert ttl is None or 95 <= ttl <= 100
    assert django_cache.touch("ttl", None)
    assert ours.touch("ttl", 50)
    django_cache.set("del", 1)
    assert ours.delete("del")
    assert django_cache.get("del") is None
    ours.add("added", "mine")
    assert not django_cache.add("added", "theirs")
    assert django_cache.get("added") == "mine"


def test_versions_are_djangos(django_cache: Any, ours: polycache.Cache) -> None:
    django_cache.set("v", "at five", version=5)
    assert ours.get("v", version=5) == "at five"
    assert ours.get("v") is None
    ours.set("w", "moved")
    assert ours.incr_version("w") == VERSION + 1
    assert django_cache.get("w", version=VERSION + 1) == "moved"
