"""Single flight in Python: one computation per key at a time among the callers of one
process (``_ThreadFlights``, threads) or of one event loop (``_AsyncFlights``, tasks), for
the pure-Python wrappers and the ``async`` paths the native single flight cannot take."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

#: Set as a shared computation's result when its leader failed: the waiters retry.
_RETRY: Any = object()
#: How long a caller waits for another's computation before computing itself (seconds).
FLIGHT_TIMEOUT = 10.0


class _ThreadFlights:
    """Single-flight for the pure-Python wrapper: one computation per key at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, _Slot] = {}

    def run(self, key: str, compute: Callable[[], Any]) -> Any:
        while True:
            with self._lock:
                slot = self._running.get(key)
                leader = slot is None
                if slot is None:
                    slot = self._running[key] = _Slot()
            if leader:
                try:
                    value = compute()
                except BaseException:
                    slot.finish(_RETRY)
                    raise
                finally:
                    with self._lock:
                        if self._running.get(key) is slot:
                            del self._running[key]
                slot.finish(value)
                return value
            if not slot.done.wait(FLIGHT_TIMEOUT):
                return compute()
            if slot.value is not _RETRY:
                return slot.value


class _Slot:
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = _RETRY

    def finish(self, value: Any) -> None:
        self.value = value
        self.done.set()


class _AsyncFlights:
    """Single-flight for ``async`` wrappers: one computation per key and event loop."""

    def __init__(self) -> None:
        self._running: dict[tuple[int, str], asyncio.Future[Any]] = {}

    def running(self, key: str) -> bool:
        """True when an await in this event loop is computing ``key``."""
        return (id(asyncio.get_running_loop()), key) in self._running

    async def run(self, key: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        while True:
            fut = self._running.get(slot)
            if fut is None:
                break
            value = await asyncio.shield(fut)
            if value is not _RETRY:
                return value
        fut = loop.create_future()
        self._running[slot] = fut
        try:
            value = await compute()
        except BaseException:
            # Not set_exception: with no waiter, asyncio would warn the exception went unread.
            fut.set_result(_RETRY)
            raise
        finally:
            if self._running.get(slot) is fut:
                del self._running[slot]
        fut.set_result(value)
        return value
