"""``polycache.Lock``: redis-py's ``Lock`` on every polycache backend.

The lock is one entry of the cache, holding its owner's token. ``acquire`` stores it only
if the entry is absent (``SET NX PX`` on Redis), ``release`` deletes it only while it still
holds this owner's token, and ``extend``/``reacquire`` change its lifetime the same way:
each is one atomic step in the store, done by the native core. A holder that dies leaves
the entry to lapse after ``timeout``; a lock without a timeout never lapses.
"""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace, TracebackType
from typing import Any, Literal

from polycache._polycache import _Lock
from polycache.exceptions import LockError

__all__ = ["Lock"]


def _token_bytes(token: str | bytes) -> bytes:
    if isinstance(token, bytes):
        return token
    if isinstance(token, str):
        return token.encode()
    raise TypeError(f"a lock token must be str or bytes, not {type(token).__name__}")


def _seconds(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{what} must be a finite number of seconds, at least 0, not {value!r}")
    return float(value)


def _optional_seconds(what: str, value: float | None) -> float | None:
    return None if value is None else _seconds(what, value)


class Lock:
    """A lock shared by every thread, process and machine that uses the same cache store.

    Made by ``cache.lock(name, timeout=None, sleep=0.1, blocking=True,
    blocking_timeout=None, thread_local=True)``, with redis-py's meaning for each argument:
    ``timeout`` (seconds) is the most the lock lives once acquired (``None``: until
    released); ``sleep`` is the wait between tries of a blocking ``acquire``; ``blocking``
    says whether ``acquire`` waits at all; ``blocking_timeout`` is the most it waits
    (``None``: for ever). With ``thread_local`` (the default), the owner's token is kept per
    thread, so a thread never releases a lock another thread of the same ``Lock`` took.

    Use it as ``with cache.lock("job", timeout=30):`` or ``async with cache.lock(...):``;
    the ``a``-methods (``aacquire``, ``arelease``, ...) never block the event loop.
    """

    def __init__(
        self,
        native: _Lock,
        name: str,
        *,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
    ) -> None:
        self._native = native
        self.name = name
        self.timeout: float | None = native.timeout
        self.sleep = _seconds("sleep", sleep)
        self.blocking = bool(blocking)
        self.blocking_timeout = _optional_seconds("blocking_timeout", blocking_timeout)
        self.thread_local = bool(thread_local)
        self.local: Any = threading.local() if self.thread_local else SimpleNamespace()
        self.local.token = None

    def __repr__(self) -> str:
        return f"<polycache.Lock {self.name!r} timeout={self.timeout!r}>"

    @property
    def key(self) -> bytes:
        """The full key the lock is stored under (prefix and version applied)."""
        return self._native.key

    def _token(self) -> bytes | None:
        # threading.local attributes exist only in the thread that set them.
        return getattr(self.local, "token", None)

    def _attempt(
        self, blocking: bool | None, blocking_timeout: float | None, token: str | bytes | None, sleep: float | None
    ) -> tuple[bytes, bool, float | None, float]:
        raw = uuid.uuid4().hex.encode() if token is None else _token_bytes(token)
        wait = self.sleep if sleep is None else _seconds("sleep", sleep)
        deadline = self.blocking_timeout if blocking_timeout is None else _seconds("blocking_timeout", blocking_timeout)
        return raw, self.blocking if blocking is None else bool(blocking), deadline, wait

    def acquire(
        self,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: str | bytes | None = None,
        sleep: float | None = None,
    ) -> bool:
        """Takes the lock; True once held, False when a non-blocking try found it held or
        ``blocking_timeout`` passed. ``token`` names the owner (a random one by default)."""
        raw, block, deadline, wait = self._attempt(blocking, blocking_timeout, token, sleep)
        if self._native.acquire(raw, block, deadline, wait):
            self.local.token = raw
            return True
        return False

    async def aacquire(
        self,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: str | bytes | None = None,
        sleep: float | None = None,
    ) -> bool:
        """``acquire``, awaitable: sleeps between tries without blocking the event loop."""
        raw, block, deadline, wait = self._attempt(blocking, blocking_timeout, token, sleep)
        if await self._native.aacquire(raw, block, deadline, wait):
            self.local.token = raw
            return True
        return False

    def locked(self) -> bool:
        """True when anyone holds the lock."""
        return self._native.locked()

    async def alocked(self) -> bool:
        """``locked``, awaitable."""
        return await self._native.alocked()

    def owned(self) -> bool:
        """True when this owner (this thread, with ``thread_local``) holds the lock."""
        token = self._token()
        return token is not None and self._native.owned(token)

    async def aowned(self) -> bool:
        """``owned``, awaitable."""
        token = self._token()
        return token is not None and await self._native.aowned(token)

    def _held(self, what: str) -> bytes:
        token = self._token()
        if token is None:
            raise LockError(f"Cannot {what} an unlocked lock")
        return token

    def release(self) -> None:
        """Releases the lock; ``LockNotOwnedError`` (the lock untouched) when it lapsed and
        another owner holds it, ``LockError`` when this owner did not acquire it."""
        token = self._held("release")
        self.local.token = None
        self._native.release(token)

    async def arelease(self) -> None:
        """``release``, awaitable."""
        token = self._held("release")
        self.local.token = None
        await self._native.arelease(token)

    def _extendable(self, what: str) -> bytes:
        token = self._held(what)
        if self.timeout is None:
            raise LockError(f"Cannot {what} a lock with no timeout")
        return token

    def extend(self, additional_time: float, replace_ttl: bool = False) -> Literal[True]:
        """Adds ``additional_time`` seconds to the lock's remaining lifetime, or with
        ``replace_ttl`` makes them its lifetime; ``LockNotOwnedError`` when this owner no
        longer holds it (or it never expires)."""
        token = self._extendable("extend")
        self._native.extend(token, _seconds("additional_time", additional_time), bool(replace_ttl))
        return True

    async def aextend(self, additional_time: float, replace_ttl: bool = False) -> Literal[True]:
        """``extend``, awaitable."""
        token = self._extendable("extend")
        await self._native.aextend(token, _seconds("additional_time", additional_time), bool(replace_ttl))
        return True

    def reacquire(self) -> Literal[True]:
        """Resets the lock's remaining lifetime to its ``timeout``."""
        self._native.reacquire(self._extendable("reacquire"))
        return True

    async def areacquire(self) -> Literal[True]:
        """``reacquire``, awaitable."""
        await self._native.areacquire(self._extendable("reacquire"))
        return True

    def __enter__(self) -> Lock:
        if self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    async def __aenter__(self) -> Lock:
        if await self.aacquire():
            return self
        raise LockError("Unable to acquire lock within the time specified")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.arelease()
