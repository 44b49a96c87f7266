"""``Cache.use(get, set)``: the hook convention of IGitt, for code that caches through a pair
of functions instead of a cache object.

A library that caches this way keeps a ``get(key)`` and a ``set(key, value)`` and lets the
application replace them (IGitt's documentation shows
``IGitt.Utils.Cache.use(django_cache.get, django_cache.set)``; no IGitt release on PyPI has
that class)::

    polycache.hooks.Cache.use(django_cache.get, django_cache.set)

Every polycache cache object's bound ``get``/``set`` fits such a hook as they are
(``polycache.Cache``, ``polycache.django.Cache`` through Django's ``caches``,
``polycache.flask.Cache``, ``polycache.ellar.Backend``): ``get(key)`` answers ``None`` on a
miss and ``set(key, value)`` stores with the cache's default timeout.

:class:`Cache` here is that convention for your own code: a process-wide pair, by default an
in-process ``memory://`` cache, that the application repoints with ``Cache.use``. It has
``get``/``set`` methods, so it can back ``@polycache.cached(backend=polycache.hooks.Cache)``;
polycache's decorators also take any external pair directly, ``cache=(get, set)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from polycache._cache import Cache as _PolyCache
from polycache._decorators import _takes_timeout
from polycache._polycache import DEFAULT_TIMEOUT

__all__ = ["Cache", "Getter", "Setter"]

Getter = Callable[[str], Any]
Setter = Callable[[str, Any], Any]


class Cache:
    """A replaceable ``(get, set)`` pair, used through the class: ``Cache.use(get, set)``,
    ``Cache.get(key)``, ``Cache.set(key, value)``.

    Until :meth:`use` is called, the pair is a private ``memory://`` cache's (Django's
    timeouts: 300 s by default).
    """

    __module__ = "polycache.hooks"

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _default: ClassVar[_PolyCache | None] = None
    _get: ClassVar[Getter | None] = None
    _set: ClassVar[Setter | None] = None

    @classmethod
    def use(cls, read_from: Getter, write_to: Setter) -> None:
        """Makes ``read_from(key)`` and ``write_to(key, value)`` the cache from now on."""
        if not callable(read_from) or not callable(write_to):
            raise TypeError("Cache.use(get, set) takes two callables")
        with cls._lock:
            cls._get, cls._set = read_from, write_to

    @classmethod
    def reset(cls) -> None:
        """Goes back to the default in-process cache."""
        with cls._lock:
            cls._get = cls._set = None

    @classmethod
    def _pair(cls) -> tuple[Getter, Setter]:
        get, set_ = cls._get, cls._set
        if get is not None and set_ is not None:
            return get, set_
        with cls._lock:
            if cls._default is None:
                cls._default = _PolyCache("memory://")
            default = cls._default
        return default.get, default.set

    @classmethod
    def get(cls, key: str) -> Any:
        """The value under ``key``, or None."""
        return cls._pair()[0](key)

    @classmethod
    def set(cls, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT) -> None:
        """Stores ``value`` under ``key``: for ``timeout`` seconds when it is given and the
        hooked setter takes a timeout, else with the hooked cache's own default."""
        set_: Any = cls._pair()[1]
        if timeout is not DEFAULT_TIMEOUT and _takes_timeout(set_):
            set_(key, value, timeout)
        else:
            set_(key, value)
