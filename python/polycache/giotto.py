"""``polycache.giotto.KeyValue``: Giotto's key-value cache interface (``GiottoKeyValue``).

.. code-block:: python

    # config.py: Giotto 0.10.5 (its PyPI release) reads the variable ``cache``
    cache = polycache.giotto.KeyValue("redis")        # a Giotto shortcut
    cache = polycache.giotto.KeyValue("memcached://10.0.0.5:11211")

Giotto calls ``get(key)`` (None on a miss) and ``set(key, obj, expire)``. ``expire`` is in
seconds; ``0`` (and ``None``) means never expire, as Giotto's memcache engine does; a negative
number stores nothing. Giotto's engine names map to polycache URLs with default local
settings:

============  ===============================================================
``redis``     ``redis://127.0.0.1:6379/0``
``memcache``  ``memcached://127.0.0.1:11211``
``database``  ``sqlite:///<current directory>/giotto-cache.sqlite3``
``locmem``    ``memory://giotto`` (one store per process, like Giotto's module dict)
``dummy``     ``dummy://``
============  ===============================================================

Anything with ``://`` is used as a URL. Giotto does not import on current Python versions,
so this class implements the interface as Giotto's ``giotto/keyvalue.py`` defines it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from polycache._cache import Cache as _PolyCache
from polycache.exceptions import ConfigurationError, SerializationError

__all__ = ["KeyValue", "SHORTCUTS", "resolve"]

#: Giotto's engine names and the polycache URLs they open (``database`` is resolved against
#: the current directory when the engine is created).
SHORTCUTS: dict[str, str] = {
    "redis": "redis://127.0.0.1:6379/0",
    "memcache": "memcached://127.0.0.1:11211",
    "database": "sqlite://{cwd}/giotto-cache.sqlite3",
    "locmem": "memory://giotto",
    "dummy": "dummy://",
}


def resolve(engine: str) -> str:
    """The polycache URL for a Giotto engine name or a URL."""
    if not isinstance(engine, str):
        raise ConfigurationError(f"a Giotto cache engine is a name or a URL, not {type(engine).__name__}")
    if "://" in engine:
        return engine
    try:
        url = SHORTCUTS[engine]
    except KeyError:
        shown = re.sub(r"[^/@]*@", "***@", engine)  # never echo a password
        raise ConfigurationError(
            f"unknown Giotto cache engine {shown!r}: expected one of {', '.join(SHORTCUTS)} or a URL"
        ) from None
    return url.format(cwd=os.path.abspath(os.getcwd()))


#: Keeps the ``locmem`` store alive for the life of the process, as Giotto's module-level
#: dict is (a named memory store lives only while a cache holds it).
_pinned: dict[str, _PolyCache] = {}


class KeyValue:
    """``GiottoKeyValue`` over a polycache location: ``KeyValue(engine="locmem", *,
    key_prefix=None, version=None, options=None, **url_options)``."""

    __module__ = "polycache.giotto"

    def __init__(
        self,
        engine: str = "locmem",
        *,
        key_prefix: str | None = None,
        version: int | None = None,
        options: Mapping[str, Any] | None = None,
        **url_options: Any,
    ) -> None:
        merged = {**(options or {}), **url_options}
        url = resolve(engine)
        self._cache = _PolyCache(url, key_prefix=key_prefix, version=version, timeout=None, options=merged or None)
        if engine == "locmem":
            _pinned.setdefault(url, self._cache)

    @property
    def polycache(self) -> _PolyCache:
        """The underlying ``polycache.Cache``."""
        return self._cache

    def get(self, key: Any) -> Any:
        """The object under ``key``, or None."""
        return self._cache.get(key if isinstance(key, str) else str(key))

    def set(self, key: Any, obj: Any, expire: float | None) -> None:
        """Stores ``obj`` for ``expire`` seconds (0 or None: never; negative: not at all)."""
        timeout = None if not expire else expire
        try:
            self._cache.set(key if isinstance(key, str) else str(key), obj, timeout)
        except SerializationError as err:
            raise (err.__cause__ or err) from None

    def __repr__(self) -> str:
        return f"<polycache.giotto.KeyValue {self._cache.location!r}>"
