"""``polycache.esipy.Cache``: the cache interface of EsiPy (``esipy.cache.BaseCache``).

.. code-block:: python

    from esipy import EsiClient
    client = EsiClient(cache=polycache.esipy.Cache("redis://127.0.0.1:6379/0"))

EsiPy calls ``get(key, default=None)``, ``set(key, value, expire)`` and ``invalidate(key)``
with keys that are tuples of strings and frozensets (the request's URL, headers, path and
query). Such a key is turned into a stable text key: the SHA-256 of a canonical form in
which every set is sorted, so the same request gives the same key in every process (EsiPy's
own ``md5(pickle.dumps(key))`` depends on the process's string hashing). ``expire`` follows
EsiPy: seconds, ``None`` never expires, ``0`` or less (EsiPy writes ``-1`` for responses
without an ``Expires`` header) is already expired and stores nothing.

EsiPy does not import on current Python versions (its pyswagger dependency), so this class
implements the interface as EsiPy documents it; when ``esipy`` is importable it also
subclasses ``esipy.cache.BaseCache``, so ``EsiClient``'s ``isinstance`` check accepts it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from polycache._cache import Cache as _PolyCache
from polycache.exceptions import SerializationError

try:
    from esipy.cache import BaseCache as _Base
except Exception:  # not installed, or fails to import (it does on Python >= 3.10)
    _Base = object

__all__ = ["Cache", "canonical_key"]

#: Prefix of every key, as EsiPy's own caches write ``esi_`` + digest.
KEY_PREFIX = "esi_"


def _canonical(obj: Any) -> str:
    """A text form of ``obj`` that does not depend on set or dict iteration order."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return repr(obj)
    if isinstance(obj, (set, frozenset)):
        return "{" + ",".join(sorted(_canonical(x) for x in obj)) + "}"
    if isinstance(obj, Mapping):
        return "{" + ",".join(sorted(f"{_canonical(k)}:{_canonical(v)}" for k, v in obj.items())) + "}"
    if isinstance(obj, (tuple, list)):
        inner = ",".join(_canonical(x) for x in obj)
        return f"({inner})" if isinstance(obj, tuple) else f"[{inner}]"
    raise TypeError(
        f"cannot make a cache key of a {type(obj).__name__}: EsiPy keys are made of str, "
        "numbers, bytes, None, tuples, lists, sets and mappings"
    )


def canonical_key(key: Any) -> str:
    """The text key for an EsiPy key: ``esi_`` + SHA-256 of its canonical form."""
    return KEY_PREFIX + hashlib.sha256(_canonical(key).encode("utf-8", "surrogatepass")).hexdigest()


class Cache(_Base):
    """EsiPy's ``BaseCache`` over a polycache location.

    ``Cache(location="memory://", *, key_prefix=None, version=None, options=None,
    **url_options)``; ``options`` and further keyword arguments are URL options.
    """

    __module__ = "polycache.esipy"

    def __init__(
        self,
        location: str = "memory://",
        *,
        key_prefix: str | None = None,
        version: int | None = None,
        options: Mapping[str, Any] | None = None,
        **url_options: Any,
    ) -> None:
        merged = {**(options or {}), **url_options}
        self._cache = _PolyCache(location, key_prefix=key_prefix, version=version, options=merged or None)

    @property
    def polycache(self) -> _PolyCache:
        """The underlying ``polycache.Cache``."""
        return self._cache

    def get(self, key: Any, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        return self._cache.get(canonical_key(key), default)

    def set(self, key: Any, value: Any, expire: float | None = 300) -> None:
        """Stores ``value`` for ``expire`` seconds (None: never; <= 0: not at all)."""
        try:
            self._cache.set(canonical_key(key), value, expire)
        except SerializationError as err:
            raise (err.__cause__ or err) from None

    def invalidate(self, key: Any) -> None:
        """Removes ``key``."""
        self._cache.delete(canonical_key(key))

    def __repr__(self) -> str:
        return f"<polycache.esipy.Cache {self._cache.location!r}>"
