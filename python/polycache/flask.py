"""``polycache.flask.Cache``: cachelib's cache API, and a Flask-Caching backend, over polycache.

.. code-block:: python

    # cachelib, anywhere
    cache = polycache.flask.Cache("redis://127.0.0.1:6379/0", default_timeout=300)

    # Flask-Caching
    app.config.update(
        CACHE_TYPE="polycache.flask.Cache",
        CACHE_POLYCACHE_URL="memory://",
        CACHE_DEFAULT_TIMEOUT=300,
        CACHE_KEY_PREFIX="app",
    )
    flask_caching.Cache(app)

Timeouts use cachelib's words: ``None`` is the cache's default, ``0`` never expires, a
negative number is already expired; seconds are ints or ``datetime.timedelta`` (a float is
rounded up, with cachelib's ``DeprecationWarning``). Entries are stored as Django's
``RedisCache`` stores them, under ``{key_prefix}:{version}:{key}``.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from polycache._cache import Cache as _PolyCache
from polycache._polycache import DEFAULT_TIMEOUT
from polycache.exceptions import KeyNotFoundError, SerializationError

if TYPE_CHECKING:
    from cachelib import BaseCache as _Base
else:
    try:
        # Flask-Caching builds a backend with `factory` only when it subclasses its own
        # BaseCache (itself a cachelib BaseCache).
        from flask_caching.backends.base import BaseCache as _Base
    except ImportError:
        from cachelib import BaseCache as _Base

from cachelib import BaseCache as _CachelibBase

__all__ = ["Cache"]


_DEFAULT = DEFAULT_TIMEOUT

#: Flask-Caching settings of how values are stored, and the arguments they become.
_VALUE_SETTINGS = {
    "CACHE_SERIALIZER": "serializer",
    "CACHE_SIGNING_KEY": "signing_key",
    "CACHE_OLD_SIGNING_KEYS": "old_signing_keys",
    "CACHE_COMPRESS_MIN_SIZE": "compress_min_size",
    "CACHE_COMPRESS_LEVEL": "compress_level",
}


def _to_seconds(timeout: Any) -> int:
    """cachelib 0.17's ``BaseCache._to_seconds``, here so that every cachelib behaves alike
    (before 0.15, the last for Python 3.9 and 3.10, cachelib has none): a ``timedelta`` and a
    float (deprecated, with cachelib's warning) round up to whole seconds."""
    if isinstance(timeout, dt.timedelta):
        return math.ceil(timeout.total_seconds())
    if isinstance(timeout, float):
        warnings.warn(
            "Float timeouts are deprecated and will raise a TypeError in a future release. Use a "
            "whole number of seconds or a datetime.timedelta instead.",
            DeprecationWarning,
            stacklevel=3,
        )
        return math.ceil(timeout)
    if isinstance(timeout, int):
        return timeout
    raise TypeError(f"timeout must be an int or datetime.timedelta, got {type(timeout).__name__!r}")


def _seconds(timeout: int) -> int | None:
    """cachelib's seconds in polycache's (Django's) words: 0 never expires."""
    return None if timeout == 0 else timeout


class Cache(_Base):
    """A cachelib ``BaseCache`` over a polycache location; Flask-Caching's ``CACHE_TYPE``.

    ``Cache(url="memory://", default_timeout=300, *, key_prefix=None, version=None,
    ignore_delete_many_errors=True, options=None, serializer=None, signing_key=None,
    old_signing_keys=None, compress_min_size=None, compress_level=None, **url_options)``:
    ``url`` is any polycache URL; ``options`` and further keyword arguments are URL options
    (``max_entries=1000``).
    """

    __module__ = "polycache.flask"

    def __init__(
        self,
        url: str = "memory://",
        default_timeout: int | dt.timedelta = 300,
        *,
        key_prefix: str | None = None,
        version: int | None = None,
        ignore_delete_many_errors: bool = True,
        options: Mapping[str, Any] | None = None,
        serializer: str | None = None,
        signing_key: str | bytes | None = None,
        old_signing_keys: list[str | bytes] | None = None,
        compress_min_size: int | None = None,
        compress_level: int | None = None,
        **url_options: Any,
    ) -> None:
        # Set here, not passed on: cachelib before 0.15 (the last for Python 3.9 and 3.10)
        # does not take it.
        _CachelibBase.__init__(self, default_timeout=default_timeout)
        self.ignore_delete_many_errors = ignore_delete_many_errors
        merged = {**(options or {}), **url_options}
        self._cache = _PolyCache(
            url,
            key_prefix=key_prefix,
            version=version,
            timeout=_seconds(self.default_timeout),
            options=merged or None,
            serializer=serializer,
            signing_key=signing_key,
            old_signing_keys=old_signing_keys,
            compress_min_size=compress_min_size,
            compress_level=compress_level,
        )
        # The hot reads go straight to the native methods, without a Python frame, unless a
        # subclass overrides them.
        if type(self).get is Cache.get:
            self.get = self._cache.get  # type: ignore[method-assign]
        if type(self).has is Cache.has:
            self.has = self._cache.has_key  # type: ignore[method-assign]

    @classmethod
    def factory(cls, app: Any, config: Mapping[str, Any], args: list[Any], kwargs: dict[str, Any]) -> Cache:
        """Flask-Caching's constructor hook: ``CACHE_POLYCACHE_URL`` (default ``memory://``),
        ``CACHE_DEFAULT_TIMEOUT``, ``CACHE_KEY_PREFIX``, ``CACHE_OPTIONS`` (URL options),
        ``CACHE_IGNORE_ERRORS``, and ``CACHE_SERIALIZER``, ``CACHE_SIGNING_KEY``,
        ``CACHE_OLD_SIGNING_KEYS``, ``CACHE_COMPRESS_MIN_SIZE``, ``CACHE_COMPRESS_LEVEL``;
        ``CACHE_ARGS``, when given, are the positional arguments."""
        kwargs = dict(kwargs)
        kwargs.setdefault("key_prefix", config.get("CACHE_KEY_PREFIX") or None)
        for setting, argument in _VALUE_SETTINGS.items():
            if config.get(setting) is not None:
                kwargs.setdefault(argument, config[setting])
        if args:
            return cls(*args, **kwargs)
        timeout = kwargs.pop("default_timeout", 300)
        return cls(config.get("CACHE_POLYCACHE_URL") or "memory://", 300 if timeout is None else timeout, **kwargs)

    @property
    def location(self) -> str:
        """The location, with any password redacted."""
        return self._cache.location

    @property
    def polycache(self) -> _PolyCache:
        """The underlying ``polycache.Cache`` (Django's API and timeout words)."""
        return self._cache

    def _timeout(self, timeout: int | dt.timedelta | None) -> Any:
        if timeout is None:
            return DEFAULT_TIMEOUT
        if type(timeout) is not int:
            timeout = _to_seconds(timeout)
        return _seconds(timeout)

    def get(self, key: str) -> Any:
        """The value under ``key``, or None."""
        return self._cache.get(key)

    def has(self, key: str) -> bool:
        """True when ``key`` is in the cache (the value is not read)."""
        return self._cache.has_key(key)

    def set(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Stores ``value``; True, or False when a fail-open cache could not reach its backend.

        A value pickle cannot serialize raises pickle's own error, as cachelib does.
        """
        try:
            return self._cache.set(key, value, _DEFAULT if timeout is None else self._timeout(timeout))
        except SerializationError as err:
            raise (err.__cause__ or err) from None

    def add(self, key: str, value: Any, timeout: int | dt.timedelta | None = None) -> bool:
        """Stores ``value`` only if ``key`` is absent; True when it stored."""
        try:
            return self._cache.add(key, value, _DEFAULT if timeout is None else self._timeout(timeout))
        except SerializationError as err:
            raise (err.__cause__ or err) from None

    def delete(self, key: str) -> bool:
        """Removes ``key``; True when it was present."""
        return self._cache.delete(key)

    def get_many(self, *keys: str) -> list[Any]:
        """The values of ``keys`` in order, None for each miss (one bulk read)."""
        if self._cache.is_local:
            # In memory, one native get per key beats building the bulk read's dict.
            return list(map(self._cache.get, keys))
        return list(map(self._cache.get_many(keys).get, keys))

    def get_dict(self, *keys: str) -> dict[str, Any]:
        """``{key: value}`` for ``keys``, None for each miss (one bulk read)."""
        return dict(zip(keys, self.get_many(*keys)))

    def set_many(self, mapping: Mapping[str, Any], timeout: int | dt.timedelta | None = None) -> list[Any]:
        """Stores every pair (one bulk write); returns the keys that were stored."""
        try:
            failed = self._cache.set_many(mapping, self._timeout(timeout))
        except SerializationError as err:
            raise (err.__cause__ or err) from None
        if not failed:
            return list(mapping)
        missed = set(failed)
        return [k for k in mapping if k not in missed]

    def delete_many(self, *keys: str) -> list[Any]:
        """Removes ``keys`` (one bulk delete); returns the keys now absent: all of them."""
        self._cache.delete_many(keys)
        return list(keys)

    def clear(self) -> bool:
        """Removes this cache's entries (those under its key prefix); True."""
        self._cache.clear()
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Adds ``delta`` atomically and returns the new value; a missing key starts at 0."""
        try:
            return self._cache.incr(key, delta)
        except KeyNotFoundError:
            if self._cache.add(key, delta):
                return delta
            # Another writer created it first: count on top of theirs.
            return self._cache.incr(key, delta)

    def dec(self, key: str, delta: int = 1) -> int | None:
        """Subtracts ``delta`` atomically; a missing key starts at 0."""
        return self.inc(key, -delta)

    def __repr__(self) -> str:
        return f"<polycache.flask.Cache {self._cache.location!r}>"
