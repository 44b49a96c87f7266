"""polycache: one cache engine for Rust, C and Python, with Django's cache API.

>>> import polycache
>>> cache = polycache.Cache("memory://?max_entries=1000", timeout=60)
>>> cache.set("greeting", "hello")
>>> cache.get("greeting")
'hello'

Values are stored exactly as Django's ``RedisCache`` stores them (plain ``int`` as ASCII
decimal, everything else pickled), so polycache and Django read each other's entries.
"""

import atexit

from polycache._cache import Cache, Timeout
from polycache._caches import CacheHandler, caches
from polycache._decorators import cached
from polycache._jobs import Call, CacheStatus, Job, cacheback
from polycache._lock import Lock
from polycache._polycache import (
    DEFAULT_TIMEOUT,
    SCHEMES,
    _shutdown,
    create_table,
    create_table_sql,
    render_prometheus,
)
from polycache.exceptions import (
    BackendError,
    CacheError,
    ConfigurationError,
    ConnectionError,
    IntegerOverflowError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyNotFoundError,
    LockError,
    LockNotOwnedError,
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
    "CacheStatus",
    "Call",
    "ConfigurationError",
    "ConnectionError",
    "IntegerOverflowError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "Job",
    "KeyNotFoundError",
    "Lock",
    "LockError",
    "LockNotOwnedError",
    "NotAnIntegerError",
    "SerializationError",
    "Timeout",
    "TimeoutError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
    "cached",
    "cacheback",
    "caches",
    "create_table",
    "create_table_sql",
    "render_prometheus",
]

# Background refreshes run Python code on polycache's own threads: at exit, stop them from
# entering Python and let the ones inside finish, before the interpreter finalizes.
atexit.register(_shutdown)
