"""``polycache.ellar.Backend``: Ellar's backend interface, inside a real Ellar application."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import time
import warnings
from typing import Any

import pytest

with warnings.catch_warnings():
    # Ellar 0.9.5 still declares pydantic v1 configs: PydanticDeprecatedSince20 at import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from ellar.cache import BaseCacheBackend, CacheModule, ICacheService
    from ellar.cache import Cache as CacheRoute
    from ellar.cache.model import CacheKeyWarning
    from ellar.common import Controller, ControllerBase, get
    from ellar.testing import Test

    from polycache.ellar import Backend

import polycache

_stores = itertools.count()


def store() -> str:
    return f"memory://ellar-test-{next(_stores)}"


@pytest.fixture
def backend() -> Backend:
    return Backend(store(), key_prefix="app", ttl=60)


def test_is_an_ellar_backend(backend: Backend) -> None:
    assert isinstance(backend, BaseCacheBackend)
    assert backend.key_prefix == "app"
    assert backend.make_key("k") == backend.polycache.make_key("k") == "app:1:k"


def test_sync_methods(backend: Backend) -> None:
    assert backend.get("k") is None
    assert backend.set("k", {"a": 1}) is True
    assert backend.get("k") == {"a": 1}
    assert backend.has_key("k") is True
    assert backend.touch("k", 30) is True
    assert backend.touch("absent") is False
    assert backend.delete("k") is True and backend.delete("k") is False
    backend.set("n", 1)
    assert backend.incr("n", 4) == 5
    assert backend.decr("n") == 4
    with pytest.raises(ValueError):  # as Ellar's local-memory backend
        backend.incr("absent")
    backend.clear()
    assert backend.get("n") is None


def test_async_methods(backend: Backend) -> None:
    async def main() -> list[Any]:
        return [
            await backend.set_async("k", "v", ttl=30),
            await backend.get_async("k"),
            await backend.has_key_async("k"),
            await backend.touch_async("k", 10),
            await backend.set_async("n", 1),
            await backend.incr_async("n", 2),
            await backend.decr_async("n"),
            await backend.delete_async("k"),
            await backend.get_async("k"),
        ]

    assert asyncio.run(main()) == [True, "v", True, True, True, 3, 2, True, None]
    asyncio.run(backend.clear_async())
    assert backend.get("n") is None


def test_ttl_words_follow_ellars_local_backend() -> None:
    b = Backend(store(), ttl=1)
    b.set("default", 1)
    b.set("none-is-default", 1, None)
    b.set("zero", 1)
    b.set("zero", 1, 0)
    b.set("negative", 1, -3)
    b.set("long", 1, 30)
    assert b.get("zero") is None and b.get("negative") is None
    time.sleep(1.3)
    assert [b.get(k) for k in ("default", "none-is-default", "long")] == [None, None, 1]


def test_versions(backend: Backend) -> None:
    backend.set("k", "one")
    backend.set("k", "two", version="2")
    assert backend.get("k") == "one"
    assert backend.get("k", version="2") == "two"
    assert backend.get("k", version=2) == "two"  # type: ignore[arg-type]
    other = Backend(backend.location, key_prefix="app", version=2)
    assert other.get("k") == "two"
    # Ellar's versions are any text (its make_key formats them): "v1" is its own version.
    backend.set("k", "v-one", version="v1")
    assert backend.get("k", version="v1") == "v-one"
    assert backend.get("k", version="v2") is None
    assert backend.get("k") == "one"
    text = Backend(backend.location, key_prefix="app", version="v1")
    assert text.get("k") == "v-one"


def test_key_warning_is_ellars(backend: Backend) -> None:
    with pytest.warns(CacheKeyWarning, match="longer than 250"):
        backend.set("k" * 251, 1)


def test_unpicklable_raises_pickles_error(backend: Backend) -> None:
    class Unpicklable:
        def __getstate__(self) -> Any:
            raise pickle.PicklingError("no")

    with pytest.raises(pickle.PicklingError):
        backend.set("k", Unpicklable())
    with pytest.raises(pickle.PicklingError):
        asyncio.run(backend.set_async("k", Unpicklable()))


def test_bad_location() -> None:
    with pytest.raises(polycache.ConfigurationError, match="nosuch"):
        Backend("nosuch://")


# --- A real Ellar application ----------------------------------------------------------

calls: list[int] = []


@Controller("/items")
class ItemsController(ControllerBase):
    def __init__(self, cache: ICacheService) -> None:
        self.cache = cache

    @get("/cached")
    @CacheRoute(ttl=60, key_prefix="items")
    def cached(self) -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    @get("/versioned")
    @CacheRoute(ttl=60, version="v1")
    def versioned(self) -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    @get("/count")
    async def count(self) -> dict[str, int]:
        n = (await self.cache.get_async("count", backend="other")) or 0
        await self.cache.set_async("count", n + 1, backend="other")
        return {"count": n + 1}


def test_inside_an_ellar_application() -> None:
    default, other = Backend(store(), key_prefix="app"), Backend(store(), key_prefix="other")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: Any = Test.create_test_module(
            controllers=[ItemsController], modules=[CacheModule.setup(default=default, other=other)]
        )
        client = module.get_test_client()
        assert client.get("/items/cached").json() == {"n": 1}
        assert client.get("/items/cached").json() == {"n": 1}  # the route's response is cached
        # A text version, as Ellar's own backends take it (this answered HTTP 500 before).
        assert client.get("/items/versioned").json() == {"n": 2}
        assert client.get("/items/versioned").json() == {"n": 2}
        assert client.get("/items/count").json() == {"count": 1}
        assert client.get("/items/count").json() == {"count": 2}
        service = module.get(ICacheService)
    assert service.get_backend("other") is other
    assert service.get("count", backend="other") == 2
    assert other.polycache.get("count") == 2
    assert default.get("count") is None
    assert len(calls) == 2
