"""``polycache.ellar.Backend``: an Ellar cache backend over any polycache location.

.. code-block:: python

    from ellar.cache import CacheModule
    from polycache.ellar import Backend

    @Module(modules=[CacheModule.setup(default=Backend("redis://127.0.0.1:6379/0", key_prefix="app"))])
    class ApplicationModule(ModuleBase): ...

A ``BaseCacheBackend`` with Ellar's sync and ``*_async`` methods, key prefix and version
(full keys ``{key_prefix}:{version}:{key}``, as Ellar's own backends make them). TTLs follow
Ellar's local-memory backend: ``None`` is the backend's default TTL, ``0`` or less is
already expired, other numbers are seconds. The ``*_async`` methods call the native method
directly on a local backend (``memory://``) and in a worker thread otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ellar.cache import BaseCacheBackend

from polycache._cache import Cache as _PolyCache
from polycache._polycache import DEFAULT_TIMEOUT
from polycache.exceptions import SerializationError

__all__ = ["Backend"]


def _ttl(ttl: float | None) -> Any:
    """Ellar's TTL in polycache's (Django's) words: None is the default, <= 0 expired."""
    if ttl is None:
        return DEFAULT_TIMEOUT
    return ttl if ttl > 0 else 0


def _version(version: Any) -> int | None:
    """Ellar's version (any value, typed ``str``) as polycache's integer version.

    An ``int`` or its decimal text is that number. Any other value (``"v1"``) becomes a
    stable number derived from its text (63 bits of its BLAKE2b digest): equal texts share
    entries, different texts do not, in every process.
    """
    if version is None or version == "":
        return None
    if isinstance(version, int) and not isinstance(version, bool):
        return version
    text = str(version)
    if text.lstrip("-").isdigit():
        return int(text)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


class Backend(BaseCacheBackend):
    """An Ellar ``BaseCacheBackend``: ``Backend(location="memory://", *, key_prefix=None,
    version=None, ttl=None, options=None, **url_options)``.

    ``ttl`` is the default TTL in seconds (Ellar's default: 300); ``options`` and further
    keyword arguments are URL options of the location (``max_entries=1000``).
    """

    __module__ = "polycache.ellar"

    def __init__(
        self,
        location: str = "memory://",
        *,
        key_prefix: str | None = None,
        version: int | str | None = None,
        ttl: int | None = None,
        options: Mapping[str, Any] | None = None,
        **url_options: Any,
    ) -> None:
        super().__init__(key_prefix=key_prefix, version=version, ttl=ttl)
        merged = {**(options or {}), **url_options}
        self._cache = _PolyCache(
            location,
            key_prefix=self._key_prefix,
            version=_version(self._version),
            timeout=self._default_ttl,
            options=merged or None,
        )

    @property
    def location(self) -> str:
        """The location, with any password redacted."""
        return self._cache.location

    @property
    def polycache(self) -> _PolyCache:
        """The underlying ``polycache.Cache`` (Django's API and timeout words)."""
        return self._cache

    def _store(self, key: str, value: Any, ttl: float | None, version: Any) -> bool:
        self.validate_key(key)
        try:
            return self._cache.set(key, value, _ttl(ttl), _version(version))
        except SerializationError as err:
            # Ellar's backends let pickle's own error through.
            raise (err.__cause__ or err) from None

    # Sync.

    def get(self, key: str, version: str | None = None) -> Any:
        """The value under ``key``, or None."""
        return self._cache.get(key, None, _version(version))

    def set(self, key: str, value: Any, ttl: float | None = None, version: str | None = None) -> bool:
        """Stores ``value``; True, or False when a fail-open cache could not reach its backend."""
        return self._store(key, value, ttl, version)

    def delete(self, key: str, version: str | None = None) -> bool:
        """Removes ``key``; True when it was present."""
        return self._cache.delete(key, _version(version))

    def touch(self, key: str, ttl: float | None = None, version: str | None = None) -> bool:
        """Gives ``key`` a new TTL; True when the key was present."""
        return self._cache.touch(key, _ttl(ttl), _version(version))

    def has_key(self, key: str, version: str | None = None) -> bool:
        """True when ``key`` is in the cache and has not expired."""
        return self._cache.has_key(key, _version(version))

    def incr(self, key: str, delta: int = 1, version: str | None = None) -> int:
        """Adds ``delta`` atomically; ``ValueError`` on a missing key, as Ellar's local backend."""
        return self._cache.incr(key, delta, _version(version))

    def decr(self, key: str, delta: int = 1, version: str | None = None) -> int:
        """Subtracts ``delta`` atomically; ``ValueError`` on a missing key."""
        return self._cache.decr(key, delta, _version(version))

    def clear(self) -> None:
        """Removes this backend's entries (those under its key prefix)."""
        self._cache.clear()

    # Async.

    async def get_async(self, key: str, version: str | None = None) -> Any:
        """``get``, awaitable."""
        return await self._cache.aget(key, None, _version(version))

    async def set_async(self, key: str, value: Any, ttl: float | None = None, version: str | None = None) -> bool:
        """``set``, awaitable."""
        self.validate_key(key)
        try:
            return await self._cache.aset(key, value, _ttl(ttl), _version(version))
        except SerializationError as err:
            raise (err.__cause__ or err) from None

    async def delete_async(self, key: str, version: str | None = None) -> bool:
        """``delete``, awaitable."""
        return await self._cache.adelete(key, _version(version))

    async def touch_async(self, key: str, ttl: float | None = None, version: str | None = None) -> bool:
        """``touch``, awaitable."""
        return await self._cache.atouch(key, _ttl(ttl), _version(version))

    async def has_key_async(self, key: str, version: str | None = None) -> bool:
        """``has_key``, awaitable."""
        return await self._cache.ahas_key(key, _version(version))

    async def incr_async(self, key: str, delta: int = 1, version: str | None = None) -> int:
        """``incr``, awaitable."""
        return await self._cache.aincr(key, delta, _version(version))

    async def decr_async(self, key: str, delta: int = 1, version: str | None = None) -> int:
        """``decr``, awaitable."""
        return await self._cache.adecr(key, delta, _version(version))

    async def clear_async(self) -> None:
        """``clear``, awaitable."""
        await self._cache.aclear()

    def __repr__(self) -> str:
        return f"<polycache.ellar.Backend {self._cache.location!r} key_prefix={self._key_prefix!r}>"
