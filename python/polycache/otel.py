"""OpenTelemetry spans of cache operations: ``pip install polycache[otel]``.

.. code-block:: python

    from polycache.otel import PolycacheInstrumentor

    PolycacheInstrumentor().instrument()  # once, at start-up

From then on every operation of ``polycache.Cache`` and ``polycache.django.Cache`` (sync and
``a``-twin) is a ``CLIENT`` span of the OpenTelemetry API's tracer, a child of the span current
when it is called, so a Django, Flask or Ellar request instrumented by OpenTelemetry shows
its cache calls under it. Attributes follow the database semantic conventions:
``db.system.name`` (and the older ``db.system``), ``db.operation.name``, ``server.address``,
``server.port`` and ``db.namespace``; a failed call has an error status and ``error.type``
(the exception's class). No key, value, user name, password or URL option is ever recorded.
A ``tiered://`` cache's call is one span: the Rust core's child spans per tier (L1, L2) are
not reported to Python.

Before ``instrument()`` and after ``uninstrument()`` the cache classes are untouched: no
wrapper, no cost. Instrumented while no OpenTelemetry SDK is installed (and no
``tracer_provider=`` given), a call makes no span; whether one was installed since is
checked once a second.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection
from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

__all__ = ["OPERATIONS", "PolycacheInstrumentor", "SpanQueue", "dropped_spans", "system_name"]

#: The operations that become spans, by their sync name; each ``a``-twin too.
OPERATIONS: tuple[str, ...] = (
    "get",
    "set",
    "add",
    "delete",
    "has_key",
    "touch",
    "incr",
    "decr",
    "get_many",
    "set_many",
    "delete_many",
    "get_or_set",
    "clear",
    "incr_version",
    "decr_version",
    "ttl",
    "expire",
    "persist",
    "keys",
    "delete_pattern",
    "invalidate_tags",
)

_SYSTEMS = {
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis+unix": "redis",
    "redis-sentinel": "redis",
    "redis+sentinel": "redis",
    "redis-cluster": "redis",
    "redis+cluster": "redis",
    "memcached": "memcached",
    "memcache": "memcached",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "memory": "polycache.memory",
    "file": "polycache.file",
    "dummy": "polycache.dummy",
    "tiered": "polycache.tiered",
}

_NETWORKED = frozenset({"redis", "memcached", "postgresql"})


def system_name(scheme: str) -> str:
    """The ``db.system.name`` of a URL scheme, as the Rust core's ``otel`` feature names it:
    ``redis``, ``memcached``, ``postgresql``, ``sqlite``, else ``polycache.<scheme>``."""
    return _SYSTEMS.get(scheme.lower(), "polycache.custom")


#: ``_attributes``' answers, by (location, operation); emptied when it grows past 1,024.
_ATTRIBUTES: dict[tuple[str, str], dict[str, Any]] = {}


def _attributes(location: str, operation: str) -> dict[str, Any]:
    """The span attributes of ``operation`` on the cache at ``location`` (already redacted by
    the cache; only its scheme and first host are read)."""
    found = _ATTRIBUTES.get((location, operation))
    if found is None:
        if len(_ATTRIBUTES) >= 1024:
            _ATTRIBUTES.clear()
        found = _ATTRIBUTES[(location, operation)] = _read_attributes(location, operation)
    return found


def _read_attributes(location: str, operation: str) -> dict[str, Any]:
    scheme, _, rest = location.partition("://")
    system = system_name(scheme)
    attributes: dict[str, Any] = {
        "db.system.name": system,
        "db.system": system,
        "db.operation.name": operation,
    }
    if system in _NETWORKED:
        authority = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
        first = authority.split(",", 1)[0]
        if first:
            try:
                parsed = urllib.parse.urlsplit(f"//{first}")
                host, port = parsed.hostname, parsed.port
            except ValueError:
                host, port = None, None
            if host:
                attributes["server.address"] = host
            if port is not None:
                attributes["server.port"] = port
    namespace = _namespace(system, rest)
    if namespace is not None:
        attributes["db.namespace"] = namespace
    return attributes


def _namespace(system: str, rest: str) -> str | None:
    """``db.namespace`` as the conventions define it (and as the Rust core sets it): Redis,
    the database index (``db`` option or path, 0 by default); PostgreSQL, the database named
    in the path (none without one: the user's name would be used); SQLite, the file's name.
    None for Memcached and polycache's own stores."""
    before_query, _, query = rest.partition("?")
    path = before_query.partition("/")[2] if "/" in before_query else ""
    if system == "redis":
        options = urllib.parse.parse_qs(query)
        index = options["db"][-1] if "db" in options else (path or "0")
        return str(int(index)) if index.isdigit() else None
    if system == "postgresql":
        return urllib.parse.unquote(path) or None
    if system == "sqlite":
        return urllib.parse.unquote(path).rpartition("/")[2] or None
    return None


def _fail(span: trace.Span, error: BaseException) -> None:
    # The class, never the message: messages may quote a key.
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    span.set_attribute("error.type", name)
    span.set_status(Status(StatusCode.ERROR, kind.__name__))


#: The API's providers that record nothing: until an SDK is installed, a call skips the span.
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


#: ``time.monotonic()`` until which no SDK is taken to be installed (checked once a second:
#: the check itself costs more than a ``memory://`` get).
_no_sdk_until = 0.0


def _untraced(explicit: bool) -> bool:
    """True when no SDK would record the span (no ``tracer_provider=`` given and none
    installed globally): the wrapper then calls the method and nothing else."""
    global _no_sdk_until
    if explicit:
        return False
    now = time.monotonic()
    if now < _no_sdk_until:
        return True
    if isinstance(trace.get_tracer_provider(), _NO_SDK):
        _no_sdk_until = now + 1.0
        return True
    return False


def _start(tracer: trace.Tracer, cache: Any, operation: str) -> trace.Span:
    """Opens the span of ``operation`` on ``cache`` under the current context."""
    return tracer.start_span(operation, kind=SpanKind.CLIENT, attributes=_attributes(cache.location, operation))


class _Current:
    """Makes ``span`` current (so that the calls a method makes are its children) and ends
    it on the way out, with an error status if an exception leaves."""

    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.token: Token[context.Context] | None = None

    def __enter__(self) -> trace.Span:
        self.token = context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        if error is not None:
            _fail(self.span, error)
        if self.token is not None:
            context.detach(self.token)
        self.span.end()


def _traced(tracer: trace.Tracer, method: Callable[..., Any], operation: str, explicit: bool) -> Callable[..., Any]:
    @functools.wraps(method)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _untraced(explicit):
            return method(self, *args, **kwargs)
        with _Current(_start(tracer, self, operation)):
            return method(self, *args, **kwargs)

    return traced


async def _until_done(span: trace.Span, awaitable: Awaitable[Any]) -> Any:
    with _Current(span):
        return await awaitable


def _traced_async(tracer: trace.Tracer, method: Callable[..., Any], operation: str, explicit: bool) -> Callable[..., Any]:
    @functools.wraps(method)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _untraced(explicit):
            return method(self, *args, **kwargs)
        # The span starts now, under the context current at the call, not when (or where)
        # the awaitable is awaited; it ends when the awaitable completes.
        span = _start(tracer, self, operation)
        token = context.attach(trace.set_span_in_context(span))
        try:
            awaitable = method(self, *args, **kwargs)
        except BaseException as error:
            _fail(span, error)
            span.end()
            raise
        finally:
            context.detach(token)
        return _until_done(span, awaitable)

    return traced


_ABSENT = object()


class PolycacheInstrumentor:
    """Switches OpenTelemetry spans of ``polycache.Cache`` and ``polycache.django.Cache`` on
    (``instrument()``) and off (``uninstrument()``), as OpenTelemetry's instrumentors do.

    ``instrument(tracer_provider=...)`` uses that provider; by default the global one (spans
    go to whatever SDK the application installs, before or after this call).
    """

    _patched: dict[tuple[type, str], object] = {}

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("polycache",)

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return bool(PolycacheInstrumentor._patched)

    def instrument(self, **kwargs: Any) -> None:
        """Wraps every operation of both cache classes in a span; a second call does nothing."""
        global _no_sdk_until
        if PolycacheInstrumentor._patched:
            return
        _no_sdk_until = 0.0
        from polycache._cache import Cache
        from polycache.django import Cache as DjangoCache

        from polycache import __version__

        provider = kwargs.get("tracer_provider")
        tracer = trace.get_tracer("polycache", __version__, tracer_provider=provider)
        for cls in (Cache, DjangoCache):
            for operation in OPERATIONS:
                for name, wrap in ((operation, _traced), ("a" + operation, _traced_async)):
                    method = getattr(cls, name, None)
                    if method is None:
                        continue
                    PolycacheInstrumentor._patched[(cls, name)] = cls.__dict__.get(name, _ABSENT)
                    setattr(cls, name, wrap(tracer, method, operation, provider is not None))

    def uninstrument(self, **kwargs: Any) -> None:
        """Puts the classes back as they were."""
        for (cls, name), original in PolycacheInstrumentor._patched.items():
            if original is _ABSENT:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        PolycacheInstrumentor._patched.clear()


_dropped_lock = threading.Lock()
_dropped = 0


def _drop(count: int) -> None:
    global _dropped
    with _dropped_lock:
        _dropped += count


def dropped_spans() -> int:
    """Spans a :class:`SpanQueue` dropped in this process: those that found its queue full
    (the exporter blocked or was slow) and those of the batches its exporter rejected."""
    return _dropped


_STOP = object()

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor as _Processor
else:
    try:
        from opentelemetry.sdk.trace import SpanProcessor as _Processor
    except ImportError:  # no SDK: nothing could take a span processor; the rest works
        _Processor = object


class SpanQueue(_Processor):
    """A span processor for OpenTelemetry's Python SDK that never lets an exporter slow a
    cache call: ``on_end`` puts the span into a bounded queue without waiting, and a thread
    of its own exports it in batches. A span that finds the queue full, and the batches the
    exporter rejects (or raises on), are dropped and counted in :func:`dropped_spans`.

    .. code-block:: python

        provider = TracerProvider()
        provider.add_span_processor(SpanQueue(OTLPSpanExporter(), max_queue=2048))

    OpenTelemetry's own ``SimpleSpanProcessor`` exports on the caller's thread (a blocked
    exporter blocks the cache call), and its ``BatchSpanProcessor`` drops when full without
    a count. Needs the SDK (``opentelemetry-sdk``), as any processor does.
    """

    def __init__(self, exporter: Any, max_queue: int = 2048, max_batch: int = 512) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError(f"max_queue and max_batch must be at least 1, not {max_queue} and {max_batch}")
        self._exporter = exporter
        self._max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="polycache-span-queue", daemon=True)
        self._thread.start()

    def on_end(self, span: Any) -> None:
        if self._stopped:
            _drop(1)
            return
        try:
            self._queue.put_nowait(span)
        except queue.Full:
            _drop(1)

    def _run(self) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        stop = False
        while not stop:
            taken = [self._queue.get()]
            while len(taken) < self._max_batch and taken[-1] is not _STOP:
                try:
                    taken.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = taken[-1] is _STOP
            batch = [span for span in taken if span is not _STOP]
            if batch:
                try:
                    result = self._exporter.export(batch)
                except Exception:
                    result = None
                if result is not SpanExportResult.SUCCESS:
                    _drop(len(batch))
            for _ in taken:
                self._queue.task_done()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Waits up to ``timeout_millis`` for the spans queued so far to be exported (or
        dropped); True when they all were."""
        deadline = time.monotonic() + timeout_millis / 1000
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def shutdown(self) -> None:
        """Stops taking spans, exports what is queued (waiting at most 5 s for the
        exporter), then shuts the exporter down."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._queue.put(_STOP, timeout=5)
        except queue.Full:
            pass
        self._thread.join(5)
        self._exporter.shutdown()
