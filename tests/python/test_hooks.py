"""``Cache.use(get, set)``: polycache caches behind IGitt's hook convention, and polycache's
decorator pointed at an external ``(get, set)`` pair."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure()
django.setup()

from django.core.cache import caches  # noqa: E402
from django.test import override_settings  # noqa: E402

import polycache  # noqa: E402
import polycache.flask  # noqa: E402
import polycache.hooks  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # Ellar's pydantic v1 configs
    import polycache.ellar  # noqa: E402

_stores = itertools.count()


class IGittCache:
    """IGitt's ``IGitt.Utils.Cache`` as its docs show it: an in-memory default that
    ``Cache.use(get, set)`` replaces; IGitt reads with ``get(key)`` and writes with
    ``set(key, value)``."""

    _store: ClassVar[dict[str, Any]] = {}
    _get: ClassVar[Callable[[str], Any]] = _store.get
    _set: ClassVar[Callable[[str, Any], Any]] = _store.__setitem__

    @classmethod
    def use(cls, read_from: Callable[[str], Any], write_to: Callable[[str, Any], Any]) -> None:
        cls._get, cls._set = read_from, write_to

    @classmethod
    def get(cls, key: str) -> Any:
        return cls._get(key)

    @classmethod
    def set(cls, key: str, value: Any) -> None:
        cls._set(key, value)


def store() -> str:
    return f"memory://hooks-test-{next(_stores)}"


def roundtrip(get: Callable[[str], Any], set_: Callable[[str, Any], Any]) -> Any:
    IGittCache.use(get, set_)
    assert IGittCache.get("repo/1") is None
    IGittCache.set("repo/1", {"title": "issue", "labels": ["bug"]})
    return IGittCache.get("repo/1")


def test_polycache_cache() -> None:
    c = polycache.Cache(store())
    assert roundtrip(c.get, c.set) == {"title": "issue", "labels": ["bug"]}
    assert c.get("repo/1") == {"title": "issue", "labels": ["bug"]}


def test_django_cache_as_igitt_configures_it() -> None:
    name = store()
    with override_settings(CACHES={"default": {"BACKEND": "polycache.django.Cache", "LOCATION": name}}):
        django_cache = caches["default"]
        assert roundtrip(django_cache.get, django_cache.set) == {"title": "issue", "labels": ["bug"]}
    assert polycache.Cache(name).get("repo/1") == {"title": "issue", "labels": ["bug"]}


def test_flask_and_ellar_caches() -> None:
    f = polycache.flask.Cache(store())
    assert roundtrip(f.get, f.set)["title"] == "issue"
    e = polycache.ellar.Backend(store())
    assert roundtrip(e.get, e.set)["title"] == "issue"


@pytest.fixture
def hooks() -> Iterator[type[polycache.hooks.Cache]]:
    yield polycache.hooks.Cache
    polycache.hooks.Cache.reset()


def test_hooks_cache_defaults_to_memory_and_can_be_repointed(hooks: type[polycache.hooks.Cache]) -> None:
    hooks.set("k", 1)
    assert hooks.get("k") == 1
    target = polycache.Cache(store())
    hooks.use(target.get, target.set)
    assert hooks.get("k") is None
    hooks.set("k", 2)
    assert target.get("k") == 2
    hooks.reset()
    assert hooks.get("k") == 1
    with pytest.raises(TypeError, match="two callables"):
        hooks.use(target.get, "nope")  # type: ignore[arg-type]


def test_decorator_pointed_at_an_external_pair(hooks: type[polycache.hooks.Cache]) -> None:
    external: dict[str, Any] = {}
    calls: list[int] = []

    @polycache.cached(cache=(external.get, external.__setitem__))
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert square(3) == 9 and square(3) == 9
    assert calls == [3] and len(external) == 1

    @polycache.cached(backend=hooks)
    def cube(n: int) -> int:
        calls.append(n)
        return n**3

    assert cube(2) == 8 and cube(2) == 8
    assert calls == [3, 2]


def test_a_setter_without_a_timeout_is_called_without_one(hooks: type[polycache.hooks.Cache]) -> None:
    stored: dict[str, Any] = {}
    timeouts: list[Any] = []

    def set_two(key: str, value: Any) -> None:
        stored[key] = value

    def set_three(key: str, value: Any, timeout: Any) -> None:
        timeouts.append(timeout)
        stored[key] = value

    @polycache.cached(cache=(stored.get, set_two), timeout=60)
    def inc(n: int) -> int:
        return n + 1

    @polycache.cached(cache=(stored.get, set_three), timeout=60)
    def dec(n: int) -> int:
        return n - 1

    assert inc(1) == 2 and inc(1) == 2 and dec(1) == 0
    assert len(stored) == 2 and timeouts == [60]

    # polycache.hooks.Cache takes a timeout and hands it on when its setter takes one.
    @polycache.cached(backend=hooks, timeout=60)
    def triple(n: int) -> int:
        return 3 * n

    assert triple(2) == 6 and triple(2) == 6
    hooks.set("gone", 1, 0)  # Django's words on the default memory:// cache: expired at once
    assert hooks.get("gone") is None
    hooks.use(stored.get, set_two)
    hooks.set("kept", 1, 60)  # the hooked setter takes no timeout: called without one
    assert stored["kept"] == 1
