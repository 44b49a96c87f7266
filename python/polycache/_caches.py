"""``polycache.caches``: named caches configured from a mapping shaped like Django's ``CACHES``."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from polycache._cache import Cache
from polycache._polycache import DEFAULT_TIMEOUT, Memo, read_cache_settings, render_prometheus
from polycache._settings import InvalidOptionError
from polycache.exceptions import ConfigurationError

__all__ = ["CacheHandler", "caches"]

def _build(name: str, entry: Any) -> Cache:
    # The core reads the entry (its rules are polycache::settings), then the cache opens.
    read = read_cache_settings(entry, name=name)
    try:
        return Cache(
            read["location"],
            key_prefix=read.get("key_prefix"),
            version=read.get("version"),
            timeout=read.get("timeout", DEFAULT_TIMEOUT),
            options=read["options"] or None,
        )
    except InvalidOptionError:
        raise  # its message names the OPTIONS key and the cache
    except ConfigurationError as err:
        raise ConfigurationError(f"cache {name!r}: {err}") from err


class CacheHandler(Mapping[str, Cache]):
    """Named caches, one called ``default``; read as ``caches["default"]``.

    Until :meth:`configure` is called, ``caches["default"]`` is a private ``memory://``
    cache. Caches are thread-safe and shared by every thread (unlike Django's per-thread
    connections, which guard clients that are not).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caches: dict[str, Cache] | None = None
        self._explicit = False
        # Memoized functions that name their cache: re-resolved after `configure`.
        self._memos: weakref.WeakSet[Memo] = weakref.WeakSet()

    def configure(self, settings: Mapping[str, Mapping[str, Any]]) -> None:
        """Opens every cache of ``settings`` (Django's ``CACHES`` shape) and replaces the current set.

        Settings per cache: ``LOCATION`` (a URL, default ``memory://``), ``TIMEOUT``
        (seconds; ``None`` never expires; ``0`` expires at once; default 300),
        ``KEY_PREFIX``, ``VERSION``, ``OPTIONS`` (Django's ``MAX_ENTRIES``, ``CULL_FREQUENCY``,
        ``SERIALIZER``, ... as ``polycache.django.Cache`` reads them, and lower-case URL options
        such as ``max_entries``) and ``BACKEND`` (ignored). Any other setting, a missing ``default`` or a cache that
        fails to open raises :class:`ConfigurationError` and leaves the current set as it was.
        """
        if not isinstance(settings, Mapping):
            raise ConfigurationError(f"the cache settings must be a mapping, not {type(settings).__name__}")
        built = {str(name): _build(str(name), entry) for name, entry in settings.items()}
        if "default" not in built:
            raise ConfigurationError("the cache settings have no 'default' cache")
        with self._lock:
            self._caches = built
            self._explicit = True
            memos = list(self._memos)
        for memo in memos:
            memo._reset()

    def _configured(self) -> bool:
        """True once :meth:`configure` has been called."""
        return self._explicit

    def _register(self, memo: Memo) -> None:
        """Makes ``memo`` resolve its cache name again after every ``configure``."""
        with self._lock:
            self._memos.add(memo)

    def stats_prometheus(self) -> str:
        """The counters of every cache as one Prometheus text page, labelled by cache name."""
        return render_prometheus(self._all())

    def _all(self) -> dict[str, Cache]:
        caches = self._caches
        if caches is None:
            with self._lock:
                if self._caches is None:
                    self._caches = {"default": Cache("memory://")}
                caches = self._caches
        return caches

    def __getitem__(self, name: str) -> Cache:
        caches = self._all()
        try:
            return caches[name]
        except KeyError:
            raise KeyError(f"no cache named {name!r}; configured: {', '.join(sorted(caches))}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    @property
    def default(self) -> Cache:
        """The ``default`` cache."""
        return self["default"]

    def close_all(self) -> None:
        """Calls ``close()`` on every cache (Django's ``caches.close_all``)."""
        for cache in self._all().values():
            cache.close()


#: The process-wide named caches.
caches = CacheHandler()
