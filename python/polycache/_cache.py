"""``polycache.Cache``: the native cache class plus its ``async`` twins."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from typing import Any, Callable, Union

from polycache._polycache import DEFAULT_TIMEOUT, DefaultTimeout
from polycache._flights import _AsyncFlights
from polycache._lock import Lock
from polycache._polycache import Cache as _NativeCache
from polycache._scan import aiter_pages
from polycache._structures import RedisStructures
from polycache._tags import aget_or_set_tagged

__all__ = ["Cache", "Timeout"]

#: A timeout in Django's words: seconds (int or float), ``None`` (never expire), or
#: ``DEFAULT_TIMEOUT`` (the cache's default). Zero or negative stores nothing.
Timeout = Union[float, None, DefaultTimeout]

_MISSING: Any = object()
#: The async single-flight slots of aget_or_set_with (created on first use).
_async_flights: Any = None


class Cache(_NativeCache, RedisStructures):
    """A cache with Django's API: ``Cache("memory://?max_entries=1000", key_prefix="app")``.

    Every method is the native one, inherited as is, and so are the awaitable twins
    (``aget``, ``aset``, ...): they answer with an awaitable that polycache's runtime
    completes, with no worker thread per call (on a local backend such as ``memory://`` it is
    complete at once). This subclass adds only the twins that call back into Python code:
    ``aget_or_set`` and ``aget_or_set_with``, and ``lock``.
    """

    __slots__ = ()
    __module__ = "polycache"

    def lock(
        self,
        name: str,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
        version: int | None = None,
    ) -> Lock:
        """The lock ``name`` (stored under ``make_key(name, version)``), with redis-py's
        arguments and semantics: see :class:`polycache.Lock`."""
        native = self._lock(name, timeout, version)
        return Lock(
            native, name, sleep=sleep, blocking=blocking, blocking_timeout=blocking_timeout, thread_local=thread_local
        )

    async def aget_or_set(
        self,
        key: str,
        default: Any,
        timeout: Timeout = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Sequence[str] | None = None,
    ) -> Any:
        """``get_or_set``, awaitable; a callable ``default`` may be ``async`` too.

        The default is called (and awaited) only on a miss. With ``tags`` the stored value
        carries them, their versions read before ``default`` runs.
        """
        if tags:
            return await aget_or_set_tagged(self, key, default, timeout, version, tags)
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
        self,
        key: str,
        loader: Callable[[], Any],
        timeout: Timeout = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        tags: Sequence[str] | None = None,
    ) -> Any:
        """``get_or_set_with``, awaitable; ``loader`` may be an ``async`` function.

        Concurrent awaits of one key in one event loop share one call of ``loader``. A sync
        ``loader`` runs through the native single-flight ``get_or_set_with``: in place on a
        local backend; else the lookup and the store are native async and only the loader
        runs on polycache's blocking pool, where it takes the GIL. With ``tags`` the stored
        value carries them, their versions read just before ``loader`` runs.
        """
        if not inspect.iscoroutinefunction(loader):
            if self.is_local:
                return self.get_or_set_with(key, loader, timeout, version, tags=tags)
            return await self._aget_or_set_with(key, loader, timeout, version, tags=tags)
        if tags:
            value = await self._aget_tagged(key, _MISSING, version, tags)
        else:
            value = await self.aget(key, _MISSING, version)
        if value is not _MISSING:
            return value
        global _async_flights
        if _async_flights is None:
            _async_flights = _AsyncFlights()

        async def compute() -> Any:
            if not tags:
                result = await loader()
                await self.aset(key, result, timeout, version)
                return result
            stamp = await self._atag_stamp(tags)
            result = await loader()
            await self._aset_stamped(key, result, timeout, version, stamp)
            return result

        # Slots are removed when their computation ends, so id(self) cannot be reused stale.
        return await _async_flights.run(f"{id(self)}:{self.make_key(key, version)}", compute)

    def aiter_keys(self, search: str, itersize: int | None = None, version: int | None = None) -> AsyncIterator[str]:
        """``iter_keys`` as an async iterator (``async for key in cache.aiter_keys("user:*")``).

        Each page of ``itersize`` keys is read on polycache's runtime and awaited; a bad
        argument or a backend that cannot list keys (memcached) raises at the call.
        """
        return aiter_pages(self.iter_keys(search, itersize, version))
