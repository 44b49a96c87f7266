"""``polycache.Cache``: the native cache class plus its ``async`` twins."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Callable, TypeVar, Union

from polycache._polycache import DEFAULT_TIMEOUT, DefaultTimeout
from polycache._polycache import Cache as _NativeCache

__all__ = ["Cache", "Timeout"]

#: A timeout in Django's words: seconds (int or float), ``None`` (never expire), or
#: ``DEFAULT_TIMEOUT`` (the cache's default). Zero or negative stores nothing.
Timeout = Union[float, None, DefaultTimeout]

_R = TypeVar("_R")
_MISSING: Any = object()
#: The async single-flight slots of aget_or_set_with (created on first use).
_async_flights: Any = None


class Cache(_NativeCache):
    """A cache with Django's API: ``Cache("memory://?max_entries=1000", key_prefix="app")``.

    Every sync method is the native one, inherited as is. This subclass adds only the
    ``async`` twins (``aget``, ``aset``, ...). On a local backend (``memory://``) they run
    the native call directly, as it never blocks; on any other backend they run it in a
    worker thread, where it releases the GIL while it waits.
    """

    __slots__ = ()
    __module__ = "polycache"

    async def _run(self, fn: Callable[..., _R], *args: Any) -> _R:
        if self.is_local:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def aget(self, key: str, default: Any = None, version: int | None = None) -> Any:
        """``get``, awaitable."""
        return await self._run(self.get, key, default, version)

    async def aset(
        self, key: str, value: object, timeout: Timeout = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """``set``, awaitable."""
        return await self._run(self.set, key, value, timeout, version)

    async def aadd(
        self, key: str, value: object, timeout: Timeout = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """``add``, awaitable."""
        return await self._run(self.add, key, value, timeout, version)

    async def aget_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        """``get_many``, awaitable."""
        return await self._run(self.get_many, keys, version)

    async def aset_many(
        self, mapping: Mapping[str, object], timeout: Timeout = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[str]:
        """``set_many``, awaitable."""
        return await self._run(self.set_many, mapping, timeout, version)

    async def adelete(self, key: str, version: int | None = None) -> bool:
        """``delete``, awaitable."""
        return await self._run(self.delete, key, version)

    async def adelete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        """``delete_many``, awaitable."""
        await self._run(self.delete_many, keys, version)

    async def ahas_key(self, key: str, version: int | None = None) -> bool:
        """``has_key``, awaitable."""
        return await self._run(self.has_key, key, version)

    async def atouch(self, key: str, timeout: Timeout = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """``touch``, awaitable."""
        return await self._run(self.touch, key, timeout, version)

    async def aincr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """``incr``, awaitable."""
        return await self._run(self.incr, key, delta, version)

    async def adecr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """``decr``, awaitable."""
        return await self._run(self.decr, key, delta, version)

    async def aget_or_set(
        self, key: str, default: Any, timeout: Timeout = DEFAULT_TIMEOUT, version: int | None = None
    ) -> Any:
        """``get_or_set``, awaitable; a callable ``default`` may be ``async`` too.

        The default is called (and awaited) only on a miss.
        """
        value = await self.aget(key, _MISSING, version)
        if value is not _MISSING:
            return value
        if callable(default):
            default = default()
            if inspect.isawaitable(default):
                default = await default
        await self.aadd(key, default, timeout, version)
        # Read back: another writer may have won the race between the miss and the add.
        return await self.aget(key, default, version)

    async def aget_or_set_with(
        self, key: str, loader: Callable[[], Any], timeout: Timeout = DEFAULT_TIMEOUT, version: int | None = None
    ) -> Any:
        """``get_or_set_with``, awaitable; ``loader`` may be an ``async`` function.

        Concurrent awaits of one key in one event loop share one call of ``loader``. A sync
        ``loader`` runs through the native single-flight ``get_or_set_with`` (in a worker
        thread on a backend that is not local).
        """
        if not inspect.iscoroutinefunction(loader):
            return await self._run(self.get_or_set_with, key, loader, timeout, version)
        value = await self.aget(key, _MISSING, version)
        if value is not _MISSING:
            return value
        from polycache._decorators import _AsyncFlights

        global _async_flights
        if _async_flights is None:
            _async_flights = _AsyncFlights()

        async def compute() -> Any:
            result = await loader()
            await self.aset(key, result, timeout, version)
            return result

        # Slots are removed when their computation ends, so id(self) cannot be reused stale.
        return await _async_flights.run(f"{id(self)}:{self.make_key(key, version)}", compute)

    async def aclear(self) -> None:
        """``clear``, awaitable."""
        await self._run(self.clear)

    async def aincr_version(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """``incr_version``, awaitable."""
        return await self._run(self.incr_version, key, delta, version)

    async def adecr_version(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """``decr_version``, awaitable."""
        return await self._run(self.decr_version, key, delta, version)

    async def aclose(self) -> None:
        """``close``, awaitable."""
        self.close()
