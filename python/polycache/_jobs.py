"""``polycache.Job`` and ``@polycache.cacheback``: django-cacheback's jobs with no task queue.

A stale value is returned at once while one refresh runs in the background, on a small
pool of threads inside polycache's core (no Celery, no RQ). Subclass :class:`Job` and define
``fetch``; read with ``job.get(*args)``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, TypeVar, cast

from polycache._cache import Cache
from polycache._caches import caches
from polycache._polycache import JobRunner, call_key

__all__ = ["Call", "Job", "cacheback"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: cacheback's default hard TTL: 30 days.
_MONTH = 30 * 86_400.0


class Call(NamedTuple):
    """The arguments of one ``get``, as ``process_result`` receives them."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Job:
    """A cached computation that serves stale values while it refreshes them.

    Subclass it and define :meth:`fetch`. Settings (class attributes, or arguments to the
    constructor): ``lifetime`` (seconds a value is fresh, default 600), ``ttl`` (the hard
    TTL of the entry in seconds, ``None`` never; default 30 days), ``fetch_on_miss`` (default
    True: a miss fetches in the caller; False: it returns ``None`` and refreshes in the
    background), ``max_stale`` (seconds past ``lifetime`` a stale value may still be served
    while refreshes fail; past it the caller fetches; ``None``: until the hard TTL) and
    ``cache`` (a name in ``polycache.caches`` or a ``polycache.Cache``).

    ``get(*args, **kwargs)`` returns ``process_result(value, call, status)`` with status
    :attr:`HIT`, :attr:`STALE` or :attr:`MISS`. A stale value is returned at once while one
    refresh per key runs in the background; a refresh that raises is logged (logger
    ``polycache``) and the stale value stays until ``max_stale``.
    """

    HIT: ClassVar[str] = "hit"
    STALE: ClassVar[str] = "stale"
    MISS: ClassVar[str] = "miss"

    lifetime: float = 600.0
    ttl: float | None = _MONTH
    fetch_on_miss: bool = True
    max_stale: float | None = None
    cache: str | Cache = "default"

    def __init__(
        self,
        lifetime: float | None = None,
        fetch_on_miss: bool | None = None,
        cache: str | Cache | None = None,
        *,
        ttl: float | None = -1.0,
        max_stale: float | None = -1.0,
    ) -> None:
        if lifetime is not None:
            self.lifetime = lifetime
        if fetch_on_miss is not None:
            self.fetch_on_miss = fetch_on_miss
        if cache is not None:
            self.cache = cache
        # -1 means "not given" here, as None is a meaningful value for both.
        if ttl is None or ttl >= 0:
            self.ttl = ttl
        if max_stale is None or max_stale >= 0:
            self.max_stale = max_stale
        self._runner: JobRunner | None = None

    # --- what a subclass defines -------------------------------------------------------

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        """Computes the value for these arguments. Subclasses must define it."""
        raise NotImplementedError(f"{type(self).__qualname__} must define fetch(*args, **kwargs)")

    def expiry(self, *args: Any, **kwargs: Any) -> float:
        """The Unix time at which a value fetched now goes stale (default: now + lifetime)."""
        return time.time() + self.lifetime

    def should_fetch_synchronously(self, *args: Any, **kwargs: Any) -> bool:
        """Asked when the value is stale: True to fetch in the caller (default False)."""
        return False

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key of these arguments: ``{module.qualname}:{digest of the arguments}``."""
        cls = type(self)
        return call_key(f"{cls.__module__}.{cls.__qualname__}", args, kwargs or None)

    def process_result(self, result: Any, call: Call, cache_status: str) -> Any:
        """What ``get`` returns; override to post-process (``cache_status``: hit/stale/miss)."""
        return result

    # --- what callers use ----------------------------------------------------------------

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """The value for these arguments: fresh, stale (refreshing behind), or fetched now."""
        value, status, _ = self._get_runner().get(self.key(*args, **kwargs), self, args, kwargs or None)
        return self.process_result(value, Call(args, kwargs), status)

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Marks the value stale and refreshes it in the background; True when one was cached."""
        return self._get_runner().invalidate(self.key(*args, **kwargs), self, args, kwargs or None)

    def delete(self, *args: Any, **kwargs: Any) -> bool:
        """Removes the value; True when one was cached."""
        return self._get_runner().delete(self.key(*args, **kwargs))

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Fetches now, stores and returns the value."""
        return self._get_runner().refresh(self.key(*args, **kwargs), self, args, kwargs or None)

    def set(self, *args: Any, data: Any, **kwargs: Any) -> bool:
        """Stores ``data`` as the fresh value for these arguments (cacheback's ``set``)."""
        expiry = self.expiry(*args, **kwargs)
        return self._get_runner().set(self.key(*args, **kwargs), data, max(0.0, expiry - time.time()))

    def is_refreshing(self, *args: Any, **kwargs: Any) -> bool:
        """True while a refresh of these arguments runs in this process."""
        return self._get_runner().is_refreshing(self.key(*args, **kwargs))

    # --- plumbing --------------------------------------------------------------------------

    def _get_runner(self) -> JobRunner:
        cache = self.cache if isinstance(self.cache, Cache) else caches[self.cache]
        runner = self._runner
        if runner is None or runner.cache is not cache:
            runner = self._runner = JobRunner(
                cache,
                lifetime=self.lifetime,
                ttl=self.ttl,
                fetch_on_miss=self.fetch_on_miss,
                max_stale=self.max_stale,
            )
        return runner

    def _polycache_fetch(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[Any, float]:
        """Called by the core: ``fetch`` plus how long its value stays fresh (from ``expiry``)."""
        kwargs = kwargs or {}
        value = self.fetch(*args, **kwargs)
        return value, max(0.0, self.expiry(*args, **kwargs) - time.time())


class FunctionJob(Job):
    """The job behind ``@cacheback``: ``fetch`` calls the decorated function."""

    def __init__(self, fn: Callable[..., Any], **settings: Any) -> None:
        super().__init__(**settings)
        self.fn = fn
        self.name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> str:
        return call_key(self.name, args, kwargs or None)


def cacheback(
    lifetime: float | None = None,
    fetch_on_miss: bool | None = None,
    cache: str | Cache | None = None,
    job_class: type[FunctionJob] | None = None,
    *,
    ttl: float | None = -1.0,
    max_stale: float | None = -1.0,
) -> Callable[[_F], _F]:
    """Turns a function into a :class:`Job`: calls return stale values while refreshing.

    ``@cacheback(lifetime=60, fetch_on_miss=False)``. The wrapper has ``job``,
    ``invalidate(*args)``, ``delete(*args)`` and ``refresh(*args)``.
    """

    def decorate(fn: _F) -> _F:
        job = (job_class or FunctionJob)(
            fn, lifetime=lifetime, fetch_on_miss=fetch_on_miss, cache=cache, ttl=ttl, max_stale=max_stale
        )

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return job.get(*args, **kwargs)

        w = cast(Any, wrapper)
        w.job = job
        w.invalidate = job.invalidate
        w.delete = job.delete
        w.refresh = job.refresh
        return cast(_F, wrapper)

    return decorate
