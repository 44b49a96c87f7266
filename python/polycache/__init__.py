"""polycache: one cache engine for Rust, C and Python, with Django's cache API.

>>> import polycache
>>> cache = polycache.Cache("memory://?max_entries=1000", timeout=60)
>>> cache.set("greeting", "hello")
>>> cache.get("greeting")
'hello'

Values are stored exactly as Django's ``RedisCache`` stores them (plain ``int`` as ASCII
decimal, everything else pickled), so polycache and Django read each other's entries.
"""

from polycache._cache import Cache, Timeout
from polycache._caches import CacheHandler, caches
from polycache._polycache import DEFAULT_TIMEOUT, SCHEMES
from polycache.exceptions import (
    BackendError,
    CacheError,
    ConfigurationError,
    ConnectionError,
    IntegerOverflowError,
    InvalidKeyError,
    KeyNotFoundError,
    NotAnIntegerError,
    SerializationError,
    TimeoutError,
    UnsupportedOperationError,
    ValueTooLargeError,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "SCHEMES",
    "BackendError",
    "Cache",
    "CacheError",
    "CacheHandler",
    "ConfigurationError",
    "ConnectionError",
    "IntegerOverflowError",
    "InvalidKeyError",
    "KeyNotFoundError",
    "NotAnIntegerError",
    "SerializationError",
    "Timeout",
    "TimeoutError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
    "caches",
]
