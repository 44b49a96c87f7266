"""``polycache.Job`` and ``@polycache.cacheback``: django-cacheback's jobs with no task queue.

A stale value is returned at once while one refresh runs in the background, on a small
pool of threads inside polycache's core (no Celery, no RQ). Subclass :class:`Job` and define
``fetch``; read with ``job.get(*args)``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar, cast

from polycache._cache import Cache
from polycache._caches import caches
from polycache._polycache import JobRunner, call_key

__all__ = ["Call", "CacheStatus", "Job", "cacheback"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: cacheback's default hard TTL: 30 days.
_MONTH = 30 * 86_400.0


class CacheStatus(enum.IntEnum):
    """What the cache held for a job's ``get``: django-cacheback's numbers (``MISS, HIT,
    STALE = range(3)``), so code written for cacheback compares them unchanged."""

    MISS = 0
    HIT = 1
    STALE = 2


_STATUS = {"miss": CacheStatus.MISS, "hit": CacheStatus.HIT, "stale": CacheStatus.STALE}


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
    while refreshes fail; past it the caller fetches; ``None``: until the hard TTL),
    ``tags`` (a list of str every value of the job carries: ``invalidate_tags`` of one makes
    the job's values misses, fetched again; default none) and ``cache``: a cache name, a ``polycache.Cache`` or a Django cache object
    (``polycache.django.Cache``). A name is an alias of Django's ``CACHES`` when Django's
    settings are configured, have that alias and ``polycache.caches.configure`` was never
    called (a ``CACHES`` entry whose ``BACKEND`` is not polycache's raises ``TypeError``);
    otherwise it is a name in ``polycache.caches``.

    ``get(*args, **kwargs)`` returns ``process_result(value, call, status, sync_fetch)`` with
    status :attr:`HIT`, :attr:`STALE` or :attr:`MISS` (cacheback's numbers). A stale value is
    returned at once while one refresh per key runs in the background; a refresh that raises
    is logged (logger ``polycache``) and the stale value stays until ``max_stale``.

    django-cacheback's hooks keep their names and signatures:
    ``should_missing_item_be_fetched_synchronously(*args, **kwargs)`` (default:
    ``fetch_on_miss``), ``should_stale_item_be_fetched_synchronously(delta, *args, **kwargs)``
    (``delta``: seconds the value has been stale; default: ``should_fetch_synchronously``)
    and ``process_result(result, call, cache_status, sync_fetch=None)``. cacheback hooks
    polycache has no use for (``async_refresh``, ``timeout``, ``empty``, ``prepare_args``,
    ``prepare_kwargs``, ``store``, ``fetch_on_stale_threshold``) raise ``TypeError`` when a
    subclass defines them, rather than being ignored.
    """

    HIT: ClassVar[CacheStatus] = CacheStatus.HIT
    STALE: ClassVar[CacheStatus] = CacheStatus.STALE
    MISS: ClassVar[CacheStatus] = CacheStatus.MISS

    lifetime: float = 600.0
    ttl: float | None = _MONTH
    fetch_on_miss: bool = True
    max_stale: float | None = None
    tags: Sequence[str] = ()
    cache: str | Any = "default"

    def __init__(
        self,
        lifetime: float | None = None,
        fetch_on_miss: bool | None = None,
        cache: str | Any | None = None,
        *,
        ttl: float | None = -1.0,
        max_stale: float | None = -1.0,
        tags: Sequence[str] | None = None,
    ) -> None:
        _refuse_unsupported_hooks(type(self))
        if tags is not None:
            self.tags = tags
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
        self._runner_deferred: JobRunner | None = None

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

    def should_missing_item_be_fetched_synchronously(self, *args: Any, **kwargs: Any) -> bool:
        """Asked on a miss: True fetches in the caller, False returns ``None`` and refreshes
        in the background (cacheback's hook; default: ``fetch_on_miss``)."""
        return self.fetch_on_miss

    def should_stale_item_be_fetched_synchronously(self, delta: float, *args: Any, **kwargs: Any) -> bool:
        """Asked when the value has been stale for ``delta`` seconds: True fetches in the
        caller (cacheback's hook; default: :meth:`should_fetch_synchronously`)."""
        return self.should_fetch_synchronously(*args, **kwargs)

    def process_result(self, result: Any, call: Call, cache_status: CacheStatus, sync_fetch: bool | None = None) -> Any:
        """What ``get`` returns; override to post-process. ``cache_status`` is :attr:`HIT`,
        :attr:`STALE` or :attr:`MISS`; ``sync_fetch`` is True when this call fetched the
        value, False when it did not, and not given on a hit (cacheback's arguments). An
        override without ``sync_fetch`` is called without it."""
        return result

    # --- what callers use ----------------------------------------------------------------

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """The value for these arguments: fresh, stale (refreshing behind), or fetched now."""
        fetch_on_miss = self.fetch_on_miss
        if type(self).should_missing_item_be_fetched_synchronously is not Job.should_missing_item_be_fetched_synchronously:
            fetch_on_miss = bool(self.should_missing_item_be_fetched_synchronously(*args, **kwargs))
        runner = self._get_runner(fetch_on_miss)
        value, status, fetched = runner.get(self.key(*args, **kwargs), self, args, kwargs or None)
        return self._result(value, status, fetched, args, kwargs)

    def _result(self, value: Any, status: str, fetched: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What ``get`` and ``aget`` return: ``process_result`` of the core's answer."""
        code = _STATUS[status]
        if code is CacheStatus.HIT or not _takes_sync_fetch(type(self)):
            # A hit has no sync_fetch (cacheback passes none); an override written for the
            # three-argument hook is called with three.
            return self.process_result(value, Call(args, kwargs), code)
        return self.process_result(value, Call(args, kwargs), code, sync_fetch=fetched)

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

    # --- awaitable twins -------------------------------------------------------------------

    async def aget(self, *args: Any, **kwargs: Any) -> Any:
        """``get``, awaitable. The cache's reads and writes are native async; an ``async def
        fetch`` is awaited on this event loop (background refreshes too, while it runs), a
        sync ``fetch`` runs on a thread of polycache's blocking pool."""
        fetch_on_miss = self.fetch_on_miss
        if type(self).should_missing_item_be_fetched_synchronously is not Job.should_missing_item_be_fetched_synchronously:
            fetch_on_miss = bool(self.should_missing_item_be_fetched_synchronously(*args, **kwargs))
        runner = self._get_runner(fetch_on_miss)
        value, status, fetched = await runner.aget(
            self.key(*args, **kwargs), self, args, kwargs or None, self._fetch_loop(), self._stale_hook()
        )
        return self._result(value, status, fetched, args, kwargs)

    async def ainvalidate(self, *args: Any, **kwargs: Any) -> bool:
        """``invalidate``, awaitable."""
        return await self._get_runner().ainvalidate(self.key(*args, **kwargs), self, args, kwargs or None, self._fetch_loop())

    async def adelete(self, *args: Any, **kwargs: Any) -> bool:
        """``delete``, awaitable."""
        return await self._get_runner().adelete(self.key(*args, **kwargs))

    async def arefresh(self, *args: Any, **kwargs: Any) -> Any:
        """``refresh``, awaitable."""
        return await self._get_runner().arefresh(self.key(*args, **kwargs), self, args, kwargs or None, self._fetch_loop())

    async def aset(self, *args: Any, data: Any, **kwargs: Any) -> bool:
        """``set``, awaitable."""
        expiry = self.expiry(*args, **kwargs)
        return await self._get_runner().aset(self.key(*args, **kwargs), data, max(0.0, expiry - time.time()))

    # --- plumbing --------------------------------------------------------------------------

    def _get_runner(self, fetch_on_miss: bool | None = None) -> JobRunner:
        """The runner on the job's cache; ``fetch_on_miss`` other than the job's setting
        gives the twin runner that decides misses the other way (same cache, same keys)."""
        cache = _native_cache(self.cache)
        deferred = fetch_on_miss is not None and fetch_on_miss != self.fetch_on_miss
        runner = self._runner_deferred if deferred else self._runner
        if runner is None or runner.cache is not cache:
            runner = JobRunner(
                cache,
                lifetime=self.lifetime,
                ttl=self.ttl,
                fetch_on_miss=not self.fetch_on_miss if deferred else self.fetch_on_miss,
                max_stale=self.max_stale,
                tags=self.tags,
            )
            if deferred:
                self._runner_deferred = runner
            else:
                self._runner = runner
        return runner

    def _polycache_fetch_stale_now(
        self, stale_for: float, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> bool:
        """Called by the core on a stale value: cacheback's hook, with its ``delta``."""
        return bool(self.should_stale_item_be_fetched_synchronously(stale_for, *args, **(kwargs or {})))

    def _polycache_fetch(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[Any, float]:
        """Called by the core: ``fetch`` plus how long its value stays fresh (from ``expiry``)."""
        if inspect.iscoroutinefunction(self.fetch):
            raise TypeError(
                f"{type(self).__qualname__}.fetch is async def: read with await job.aget(...) "
                "(or refresh with arefresh/ainvalidate), not the sync methods"
            )
        kwargs = kwargs or {}
        value = self.fetch(*args, **kwargs)
        return value, max(0.0, self.expiry(*args, **kwargs) - time.time())

    async def _polycache_afetch(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[Any, float]:
        """Called by the core, on the caller's event loop: ``await fetch`` plus its freshness."""
        kwargs = kwargs or {}
        value = await self.fetch(*args, **kwargs)
        return value, max(0.0, self.expiry(*args, **kwargs) - time.time())

    def _fetch_loop(self) -> asyncio.AbstractEventLoop | None:
        """The running loop, when ``fetch`` is ``async def`` (it is awaited there); else None."""
        return asyncio.get_running_loop() if inspect.iscoroutinefunction(self.fetch) else None

    def _stale_hook(self) -> bool:
        """True when the class overrides a hook asked about stale values (asking it needs the GIL)."""
        cls = type(self)
        return (
            cls.should_stale_item_be_fetched_synchronously is not Job.should_stale_item_be_fetched_synchronously
            or cls.should_fetch_synchronously is not Job.should_fetch_synchronously
        )


#: django-cacheback hooks with no meaning here: a subclass defining one gets a TypeError
#: saying what to do instead, never a hook that is silently not called.
_UNSUPPORTED_HOOKS: dict[str, str] = {
    "async_refresh": "refreshes run on polycache's own pool; nothing is queued",
    "timeout": "the refresh in flight is tracked by the core; set lifetime/ttl instead",
    "empty": "a deferred miss returns None (set fetch_on_miss=False)",
    "prepare_args": "define key() to build the key from the arguments",
    "prepare_kwargs": "define key() to build the key from the arguments",
    "store": "values are stored by the core; override expiry() for their lifetime",
    "fetch_on_stale_threshold": "override should_stale_item_be_fetched_synchronously(delta, ...)",
    "refresh_timeout": "the refresh in flight is tracked by the core",
    "task_options": "there is no task queue",
}
_checked: set[type] = set()


def _refuse_unsupported_hooks(cls: type) -> None:
    if cls in _checked:
        return
    for klass in cls.__mro__:
        if klass is Job or klass is object:
            break
        for name, instead in _UNSUPPORTED_HOOKS.items():
            if name in vars(klass):
                raise TypeError(
                    f"{cls.__qualname__} defines django-cacheback's {name!r}, which polycache.Job "
                    f"does not call: {instead}"
                )
    _checked.add(cls)


_sync_fetch_takers: dict[type, bool] = {}


def _takes_sync_fetch(cls: type) -> bool:
    """True when ``cls.process_result`` takes cacheback's ``sync_fetch`` argument."""
    takes = _sync_fetch_takers.get(cls)
    if takes is None:
        try:
            params = inspect.signature(getattr(cls, "process_result")).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        takes = "sync_fetch" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        _sync_fetch_takers[cls] = takes
    return takes


_natives_lock = threading.Lock()
_alias_natives: dict[tuple[str, str], Cache] = {}
_object_natives: weakref.WeakKeyDictionary[Any, Cache] = weakref.WeakKeyDictionary()


def _native_cache(cache: Any) -> Cache:
    """The native cache a job runs on, from a name, a ``polycache.Cache`` or a Django cache."""
    if isinstance(cache, Cache):
        return cache
    if isinstance(cache, str):
        if not caches._configured() and _django_configured():
            from django.conf import settings
            from django.core.cache import caches as django_caches

            if cache not in settings.CACHES:
                return caches[cache]

            # Django hands each thread its own cache object: one native cache per alias
            # (and settings), so every thread's job shares one runner and its refreshes.
            memo_key = (cache, repr(settings.CACHES.get(cache)))
            with _natives_lock:
                native = _alias_natives.get(memo_key)
            if native is None:
                native = _native_cache(django_caches[cache])
                with _natives_lock:
                    native = _alias_natives.setdefault(memo_key, native)
            return native
        return caches[cache]
    if callable(getattr(cache, "_polycache_native", None)):
        with _natives_lock:
            native = _object_natives.get(cache)
            if native is None:
                native = _object_natives[cache] = cast(Cache, cache._polycache_native())
        return native
    raise TypeError(
        f"a job's cache must be a cache name, a polycache.Cache or a polycache.django.Cache, not "
        f"{type(cache).__module__}.{type(cache).__qualname__} (a Job stores its values through "
        "polycache's core, so other Django backends cannot hold them)"
    )


def _django_configured() -> bool:
    """True when Django is imported and its settings are configured (never imports Django)."""
    import sys

    conf = sys.modules.get("django.conf")
    return conf is not None and bool(conf.settings.configured)


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


class AsyncFunctionJob(FunctionJob):
    """The job behind ``@cacheback`` on an ``async def`` function: ``fetch`` awaits it."""

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(*args, **kwargs)


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
    ``invalidate(*args)``, ``delete(*args)`` and ``refresh(*args)``. On an ``async def``
    function the wrapper is ``async`` (it awaits ``job.aget``) and so are those three.
    """

    def decorate(fn: _F) -> _F:
        is_async = inspect.iscoroutinefunction(fn)
        job = (job_class or (AsyncFunctionJob if is_async else FunctionJob))(
            fn, lifetime=lifetime, fetch_on_miss=fetch_on_miss, cache=cache, ttl=ttl, max_stale=max_stale
        )
        if is_async:

            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                return await job.aget(*args, **kwargs)

            return _wrapper(fn, awrapper, job, job.ainvalidate, job.adelete, job.arefresh)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return job.get(*args, **kwargs)

        return _wrapper(fn, wrapper, job, job.invalidate, job.delete, job.refresh)

    return decorate


def _wrapper(fn: _F, wrapper: Callable[..., Any], job: Job, *methods: Callable[..., Any]) -> _F:
    """``wrapper`` dressed as ``fn``, with the job and its ``invalidate``, ``delete`` and
    ``refresh`` (or their awaitable twins)."""
    w = cast(Any, functools.wraps(fn)(wrapper))
    w.job = job
    w.invalidate, w.delete, w.refresh = methods
    return cast(_F, w)
