# Stubs of polycache.esipy; checked against the runtime by `python -m mypy.stubtest polycache`.
# The base (esipy.cache.BaseCache when EsiPy imports, else object) is left out.
from collections.abc import Mapping
from typing import Any, Final

from polycache._cache import Cache as _PolyCache

__all__ = ["Cache", "canonical_key"]

KEY_PREFIX: Final[str]

def canonical_key(key: Any) -> str: ...

class Cache:
    def __init__(
        self,
        location: str = "memory://",
        *,
        key_prefix: str | None = None,
        version: int | None = None,
        options: Mapping[str, Any] | None = None,
        **url_options: Any,
    ) -> None: ...
    @property
    def polycache(self) -> _PolyCache: ...
    def get(self, key: Any, default: Any = None) -> Any: ...
    def set(self, key: Any, value: Any, expire: float | None = 300) -> None: ...
    def invalidate(self, key: Any) -> None: ...
