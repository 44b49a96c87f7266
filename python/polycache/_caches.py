"""``polycache.caches``: named caches configured from a mapping shaped like Django's ``CACHES``."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, cast

from polycache._cache import Cache
from polycache._polycache import DEFAULT_TIMEOUT, Memo, render_prometheus
from polycache._settings import _check_url_settings, _url_options
from polycache.exceptions import ConfigurationError

__all__ = ["CacheHandler", "caches"]

_SETTINGS = ("BACKEND", "LOCATION", "TIMEOUT", "KEY_PREFIX", "VERSION", "OPTIONS")


def _build(name: str, entry: Any) -> Cache:
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"cache {name!r}: must be a mapping of settings, not {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in _SETTINGS)
    if unknown:
        raise ConfigurationError(
            f"cache {name!r}: unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(_SETTINGS)}"
        )
    location = entry.get("LOCATION", "memory://")
    if not isinstance(location, str):
        raise ConfigurationError(f"cache {name!r}: LOCATION must be a URL string, not {type(location).__name__}")
    key_prefix = entry.get("KEY_PREFIX")
    if key_prefix is not None and not isinstance(key_prefix, str):
        raise ConfigurationError(f"cache {name!r}: KEY_PREFIX must be a str, not {type(key_prefix).__name__}")
    version = entry.get("VERSION")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise ConfigurationError(f"cache {name!r}: VERSION must be an int, not {type(version).__name__}")
    timeout = entry.get("TIMEOUT", DEFAULT_TIMEOUT)
    if timeout is not None and timeout is not DEFAULT_TIMEOUT and (
        not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
    ):
        raise ConfigurationError(
            f"cache {name!r}: TIMEOUT must be a number of seconds or None, not {type(timeout).__name__}"
        )
    options = entry.get("OPTIONS")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigurationError(f"cache {name!r}: OPTIONS must be a mapping, not {type(options).__name__}")
    try:
        _check_url_settings(location, entry)
        url_options = _url_options(options, location)
        return Cache(
            location, key_prefix=key_prefix, version=version, timeout=timeout, options=cast(Any, url_options) or None
        )
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
