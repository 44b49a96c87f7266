"""``polycache.django.Cache``: a Django cache backend over any polycache location.

.. code-block:: python

    CACHES = {
        "default": {
            "BACKEND": "polycache.django.Cache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "TIMEOUT": 300,
            "KEY_PREFIX": "site",
            "VERSION": 1,
            "OPTIONS": {"socket_timeout": 0.5},
        }
    }

A subclass of Django's ``BaseCache`` whose methods are native: key making and Django's key
checks (``CacheKeyWarning`` with Django's exact texts) run in Rust, and so does the call to
the backend. Timeouts, results and errors are Django's. Entries are stored as Django's
``RedisCache`` stores them, under Django's full keys (``{KEY_PREFIX}:{VERSION}:{key}``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    CacheKeyWarning,
    default_key_func,
    get_key_func,
)

from polycache._polycache import _DjangoCache, read_cache_settings
from polycache._scan import aiter_pages
from polycache._settings import InvalidOptionError
from polycache._structures import RedisStructures
from polycache.exceptions import ConfigurationError

__all__ = ["Cache", "InvalidOptionError"]

#: The store a ``memory://`` LOCATION without a name opens: shared by every such cache of
#: the process, as every ``LocMemCache`` without a LOCATION shares one.
DEFAULT_MEMORY_STORE = "django"

def _int_or(value: object, fallback: int) -> int:
    """``int(value)``, or ``fallback`` when that fails: Django's reading of its numbers."""
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (ValueError, TypeError):
        return fallback


def _ignore_exceptions() -> bool:
    """django-redis' ``DJANGO_REDIS_IGNORE_EXCEPTIONS`` setting: every cache fails open."""
    from django.conf import settings

    return settings.configured and bool(getattr(settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", False))


class Cache(_DjangoCache, RedisStructures, BaseCache):  # type: ignore[misc]
    """A Django cache backend: ``"BACKEND": "polycache.django.Cache"``.

    ``LOCATION`` is a polycache URL (``memory://`` when empty; ``memory://`` without a store
    name opens the process-wide store ``memory://django``, as ``LocMemCache`` shares one
    store between its instances). A list of URLs that differ only in their host becomes
    one multi-host URL. ``OPTIONS``: ``MAX_ENTRIES`` and ``CULL_FREQUENCY`` (Django's cull,
    exact LRU on memory://; ignored on redis:// and memcached://, as Django does) and any
    lower-case URL option of the scheme, e.g. ``{"max_bytes": 64 << 20}`` or
    ``{"fail_open": True}``.
    ``SERIALIZER`` (``"pickle"``, the default and Django's format, ``"json"`` or ``"raw"``),
    ``SIGNING_KEY``, ``OLD_SIGNING_KEYS``, ``COMPRESS_MIN_SIZE`` and ``COMPRESS_LEVEL`` set
    how values are stored (see the security guide).

    Django's async cache API (``aget``, ``aset``, ...) is native too: each answers with an
    awaitable that polycache's runtime completes, with no worker thread per call.
    """

    __module__ = "polycache.django"

    def __new__(cls, location: Any, params: Mapping[str, Any]) -> Cache:
        # The core reads the settings as Django's backends read them (polycache::settings).
        read = read_cache_settings(
            {**params, "LOCATION": location},
            django_store=DEFAULT_MEMORY_STORE,
            ignore_exceptions=_ignore_exceptions(),
        )
        url, options = read["location"], read["options"]
        kwargs: dict[str, Any] = {
            "key_prefix": read.get("key_prefix", ""),
            "version": read.get("version", 1),
            "default_timeout": read["timeout"],
            "key_func": get_key_func(params.get("KEY_FUNCTION")),
            "default_key_func": default_key_func,
            "sentinel": DEFAULT_TIMEOUT,
            "warning": CacheKeyWarning,
            "custom_make_key": cls.make_key is not _DjangoCache.make_key,
            "custom_validate": cls.validate_key is not _DjangoCache.validate_key,
            "custom_make_and_validate": cls.make_and_validate_key is not _DjangoCache.make_and_validate_key,
        }
        try:
            return super().__new__(cls, url, options=options or None, **kwargs)
        except ConfigurationError as err:
            if not options:
                raise
            # The same location without OPTIONS opens: the fault is in OPTIONS.
            try:
                super().__new__(cls, url, options=None, **kwargs)
            except ConfigurationError:
                raise err from None
            raise InvalidOptionError(f"OPTIONS: {err}") from err

    def __init__(self, location: Any, params: Mapping[str, Any]) -> None:
        # Not BaseCache.__init__: the key settings live in the native half (read-only).
        options = params.get("OPTIONS") or {}
        self._max_entries = _int_or(params.get("max_entries", options.get("MAX_ENTRIES", 300)), 300)
        self._cull_frequency = _int_or(params.get("cull_frequency", options.get("CULL_FREQUENCY", 3)), 3)

    def aiter_keys(self, search: str, itersize: int | None = None, version: Any = None) -> AsyncIterator[str]:
        """``iter_keys`` as an async iterator, each page awaited (django-redis has no async twin)."""
        return aiter_pages(self.iter_keys(search, itersize, version))

    def __repr__(self) -> str:
        return f"<polycache.django.Cache {self.location!r} key_prefix={self.key_prefix!r} version={self.version!r}>"
