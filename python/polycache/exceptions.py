"""The exceptions polycache raises.

Every one derives from :class:`CacheError`, and also from the builtin exception whose meaning
it shares, so existing ``except ValueError:`` / ``except ConnectionError:`` code keeps
working. The native module picks the class by the error's kind, never by its message.
"""

import builtins

__all__ = [
    "BackendError",
    "CacheError",
    "ConfigurationError",
    "ConnectionError",
    "IntegerOverflowError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "KeyNotFoundError",
    "LockError",
    "LockNotOwnedError",
    "NotAnIntegerError",
    "SerializationError",
    "TimeoutError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
]


class CacheError(Exception):
    """The base of every error polycache raises."""


class ConnectionError(CacheError, builtins.ConnectionError):
    """The cache server could not be reached, or the connection broke."""


class TimeoutError(CacheError, builtins.TimeoutError):
    """An operation did not finish within its timeout."""


class ConfigurationError(CacheError, ValueError):
    """A location, option or setting is wrong (unknown scheme, ``max_entries=-1``, ...).

    The message names the offending scheme, option or setting.
    """


class InvalidKeyError(CacheError, ValueError):
    """The key cannot be used: too long, or not valid for this cache."""


class ValueTooLargeError(CacheError, ValueError):
    """The serialized value is larger than the cache accepts."""


class KeyNotFoundError(CacheError, ValueError):
    """``incr``/``decr``/``incr_version`` on a key that is not in the cache.

    A ``ValueError``, as Django raises for a missing key.
    """


class NotAnIntegerError(CacheError, TypeError):
    """``incr``/``decr`` on a value that is not an integer.

    A ``TypeError``, as ``"a" + 1`` is: what Django's local-memory cache raises here.
    """


class SerializationError(CacheError, TypeError):
    """A value could not be pickled (a lambda, a lock, ...) or a stored value unpickled.

    A ``TypeError``, as pickle raises for most unpicklable objects; the original pickle
    error is chained as ``__cause__``. A value that fails to serialize is never stored.
    """


class IntegerOverflowError(CacheError, OverflowError):
    """``incr``/``decr`` would leave the 64-bit signed range."""


class UnsupportedOperationError(CacheError, NotImplementedError):
    """The backend does not support this operation."""


class BackendError(CacheError):
    """The backend failed in another way (an I/O error, an error reply from a server)."""


class InvalidArgumentError(CacheError, ValueError):
    """An argument of an operation is wrong (``zadd`` with both ``nx`` and ``xx``, a
    ``count`` that is not an ``int``, ...)."""


class LockError(CacheError):
    """A lock cannot do what was asked: release or extend a lock this owner does not hold,
    extend a lock that has no timeout, or acquire it within the time given (redis-py's
    ``redis.exceptions.LockError``)."""


class LockNotOwnedError(LockError):
    """A lock's release, extend or reacquire by an owner whose token no longer holds it
    (it lapsed and someone else took it); the lock is left untouched (redis-py's
    ``redis.exceptions.LockNotOwnedError``)."""
