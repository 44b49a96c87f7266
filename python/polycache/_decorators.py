"""``@polycache.cached``: memoize sync and async functions and methods in a cache.

On a polycache cache (a name in ``polycache.caches`` or a ``polycache.Cache``), a sync
function's wrapper is the native ``Memo``: a hit runs in Rust without a Python frame, a miss
is computed once for every thread that misses the key at the same time (single-flight).
Async functions get an ``async`` wrapper whose concurrent awaits of one key share one
computation (an ``asyncio`` future per key and event loop), and XFetch early refresh works as
in the sync wrapper. Any other cache, given as a
``(get, set)`` pair or an object with ``get``/``set`` methods, gets a pure-Python wrapper
with the same single-flight.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, Union, cast, overload

from polycache._cache import Cache, Timeout
from polycache._caches import caches
from polycache._flights import _AsyncFlights, _ThreadFlights
from polycache._polycache import DEFAULT_TIMEOUT, Memo, call_key

__all__ = ["cached"]

_F = TypeVar("_F", bound=Callable[..., Any])
_R = TypeVar("_R")
_log = logging.getLogger("polycache")
_MISS: Any = object()
Getter = Callable[[str], Any]
Setter = Callable[..., Any]
CacheArg = Union[str, Cache, tuple[Getter, Setter], Any]


def _is_method(fn: Callable[..., Any]) -> bool:
    """True when the first parameter is named ``self`` or ``cls`` (dogpile's rule)."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] in ("self", "cls")


def _function_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "?")
    return f"{module}.{qualname}"


def _async_memo(memo: Memo, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    flights = _AsyncFlights()

    async def compute_and_store(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The await's wall time is XFetch's delta (it includes time other tasks ran).
        # The tags' versions are read before the function runs (see get_or_set_with(tags=)).
        stamp = await memo._atag_stamp(args, kwargs) if memo.has_tags else None
        started = time.perf_counter()
        result = await fn(*args, **kwargs)
        await memo._astore(key, result, time.perf_counter() - started, stamp)
        return result

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = memo.key(*args, **kwargs)
        # With the call's arguments, a tagged memo reads the value and its tags' versions
        # in one request, as the sync wrapper does.
        value, early = await memo._aprobe(key, _MISS, args, kwargs)
        if value is not _MISS and not early:
            return value
        if value is _MISS:
            return await flights.run(key, lambda: compute_and_store(key, args, kwargs))
        # XFetch chose this call to refresh early. As in the sync wrapper, one awaiter
        # recomputes while the others keep the current value, which a failed refresh keeps.
        if flights.running(key):
            return value
        try:
            return await flights.run(key, lambda: compute_and_store(key, args, kwargs))
        except Exception:
            _log.warning("early refresh of %r failed, keeping the current value", key, exc_info=True)
            return value

    async def refresh(*args: Any, **kwargs: Any) -> Any:
        return await compute_and_store(memo.key(*args, **kwargs), args, kwargs)

    w = cast(Any, wrapper)
    w.key = memo.key
    w.invalidate = memo.invalidate
    w.refresh = refresh
    w.memo = memo
    return wrapper


def _takes_timeout(set_: Setter) -> bool:
    """True when ``set_(key, value, timeout)`` is a valid call (unknown signatures: True)."""
    try:
        signature = inspect.signature(set_)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(None, None, None)
    except TypeError:
        return False
    return True


def _pair_memo(
    fn: Callable[..., Any],
    name: str,
    get: Getter,
    set_: Setter,
    timeout: Timeout,
    key: Callable[..., str] | None,
    skip_first: bool,
    single_flight: bool,
) -> Callable[..., Any]:
    """The wrapper over an external ``get``/``set`` pair: a miss is ``get`` returning None."""

    def make_key(*args: Any, **kwargs: Any) -> str:
        if key is not None:
            return f"{name}:{key(*args, **kwargs)}"
        return call_key(name, args, kwargs, skip_first)

    # A setter that takes no timeout is called without one: its own default TTL applies.
    pass_timeout = timeout is not DEFAULT_TIMEOUT and _takes_timeout(set_)

    def store(k: str, value: Any) -> Any:
        return set_(k, value, timeout) if pass_timeout else set_(k, value)

    if inspect.iscoroutinefunction(fn):
        aflights = _AsyncFlights()

        async def maybe_await(x: Any) -> Any:
            return await x if inspect.isawaitable(x) else x

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            k = make_key(*args, **kwargs)
            value = await maybe_await(get(k))
            if value is not None:
                return value

            async def compute() -> Any:
                result = await fn(*args, **kwargs)
                await maybe_await(store(k, result))
                return result

            return await (aflights.run(k, compute) if single_flight else compute())

        async def arefresh(*args: Any, **kwargs: Any) -> Any:
            k = make_key(*args, **kwargs)
            result = await fn(*args, **kwargs)
            await maybe_await(store(k, result))
            return result

        def ainvalidate(*args: Any, **kwargs: Any) -> Any:
            return store(make_key(*args, **kwargs), None)

        a = cast(Any, awrapper)
        a.key, a.refresh, a.invalidate = make_key, arefresh, ainvalidate
        return awrapper

    flights = _ThreadFlights()

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = make_key(*args, **kwargs)
        value = get(k)
        if value is not None:
            return value

        def compute() -> Any:
            result = fn(*args, **kwargs)
            store(k, result)
            return result

        return flights.run(k, compute) if single_flight else compute()

    def refresh(*args: Any, **kwargs: Any) -> Any:
        k = make_key(*args, **kwargs)
        result = fn(*args, **kwargs)
        store(k, result)
        return result

    def invalidate(*args: Any, **kwargs: Any) -> Any:
        # A get/set pair has no delete: storing None makes the next call a miss.
        return store(make_key(*args, **kwargs), None)

    w = cast(Any, wrapper)
    w.key, w.refresh, w.invalidate = make_key, refresh, invalidate
    return wrapper


@overload
def cached(timeout: _F) -> _F: ...
@overload
def cached(
    timeout: Timeout = ...,
    key_prefix: str | None = ...,
    version: int | None = ...,
    cache: CacheArg = ...,
    key: Callable[..., str] | None = ...,
    *,
    backend: Any = ...,
    single_flight: bool = ...,
    tags: Sequence[str] | Callable[..., Sequence[str]] | None = ...,
) -> Callable[[_F], _F]: ...
def cached(
    timeout: Any = DEFAULT_TIMEOUT,
    key_prefix: str | None = None,
    version: int | None = None,
    cache: CacheArg = "default",
    key: Callable[..., str] | None = None,
    *,
    backend: Any = None,
    single_flight: bool = True,
    tags: Sequence[str] | Callable[..., Sequence[str]] | None = None,
) -> Any:
    """Memoizes a function, method or ``async`` function in a cache.

    ``@cached`` or ``@cached(timeout=60, cache="default")``. The key of a call is
    ``{key_prefix}:{digest of the arguments}``, where ``key_prefix`` defaults to the
    function's ``module.qualname``; ``key=`` replaces the digest by ``key(*args, **kwargs)``.
    For a method (first parameter ``self`` or ``cls``) the instance is left out of the key
    unless it defines ``__cache_key__()``. ``timeout`` uses Django's words (``None`` never
    expires, ``0`` stores nothing, default: the cache's). ``cache`` is a name in
    ``polycache.caches`` (resolved at the first call, again after ``caches.configure``), a
    ``polycache.Cache``, or a ``(get, set)`` pair; ``backend=`` takes any object with
    ``get``/``set``. The wrapper has ``key(*args)``, ``invalidate(*args)`` and
    ``refresh(*args)``. ``tags`` (a list of str, or a callable that takes the call's
    arguments and returns one) are carried by every stored value:
    ``cache.invalidate_tags([...])`` makes them misses; a polycache cache is needed.
    """
    if callable(timeout) and not isinstance(timeout, (int, float)):
        return cached()(timeout)

    def decorate(fn: _F) -> _F:
        name = key_prefix or _function_name(fn)
        skip_first = _is_method(fn)
        pair: tuple[Getter, Setter] | None = None
        if backend is not None:
            pair = (backend.get, backend.set)
        elif isinstance(cache, tuple):
            if len(cache) != 2 or not all(callable(f) for f in cache):
                raise TypeError("cache=(get, set) takes two callables")
            pair = (cache[0], cache[1])
        elif not isinstance(cache, (str, Cache)):
            if not (callable(getattr(cache, "get", None)) and callable(getattr(cache, "set", None))):
                raise TypeError(
                    f"cache must be a cache name, a polycache.Cache, a (get, set) pair or an "
                    f"object with get and set methods, not {type(cache).__name__}"
                )
            pair = (cache.get, cache.set)
        if pair is not None and tags is not None:
            raise TypeError("tags= needs a polycache cache (a name or a polycache.Cache), not a get/set pair")
        if pair is not None:
            return cast(_F, _pair_memo(fn, name, pair[0], pair[1], timeout, key, skip_first, single_flight))

        if isinstance(cache, Cache):
            memo = Memo(
                fn, name, cache=cache, timeout=timeout, version=version, key=key,
                skip_first=skip_first, single_flight=single_flight, tags=tags,
            )
        else:
            cache_name = cast(str, cache)
            memo = Memo(
                fn, name, resolver=lambda: caches[cache_name], timeout=timeout, version=version,
                key=key, skip_first=skip_first, single_flight=single_flight, tags=tags,
            )
            caches._register(memo)
        if inspect.iscoroutinefunction(fn):
            return cast(_F, _async_memo(memo, fn))
        functools.update_wrapper(memo, fn)
        return cast(_F, memo)

    return decorate
