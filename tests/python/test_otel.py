"""OpenTelemetry spans of ``polycache.otel.PolycacheInstrumentor``, read back through the
SDK's in-memory exporter: names, database attributes, parents, error status, no secrets,
async context, both faces, and the classes left untouched when it is off."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import polycache
import polycache.django
from polycache.otel import PolycacheInstrumentor, SpanQueue, dropped_spans

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    PolycacheInstrumentor().instrument(tracer_provider=provider)
    try:
        yield exporter, provider
    finally:
        PolycacheInstrumentor().uninstrument()


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def django_cache(location: str) -> polycache.django.Cache:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    return polycache.django.Cache(location, {})


def test_off_means_untouched_classes() -> None:
    assert not PolycacheInstrumentor().is_instrumented_by_opentelemetry
    for cls in (polycache.Cache, polycache.django.Cache):
        assert "get" not in cls.__dict__ and "aget" not in cls.__dict__
    native = polycache.Cache.__dict__.get("aget_or_set")
    PolycacheInstrumentor().instrument()
    assert polycache.Cache.__dict__["get"] is not None
    PolycacheInstrumentor().uninstrument()
    assert "get" not in polycache.Cache.__dict__
    assert polycache.Cache.__dict__.get("aget_or_set") is native


def test_sync_operations_are_client_spans(exporter: Any) -> None:
    spans_out, _ = exporter
    c = polycache.Cache("memory://?max_entries=100")
    c.set("user:42", "secret value")
    assert c.get("user:42") == "secret value"
    c.get_many(["user:42", "absent"])
    c.delete("user:42")
    spans = finished(spans_out)
    assert [s.name for s in spans] == ["set", "get", "get_many", "delete"]
    for s in spans:
        assert s.kind is SpanKind.CLIENT
        assert s.instrumentation_scope is not None and s.instrumentation_scope.name == "polycache"
        a = attrs(s)
        assert a["db.system.name"] == a["db.system"] == "polycache.memory"
        assert a["db.operation.name"] == s.name
        assert "server.address" not in a
        assert s.status.status_code is StatusCode.UNSET
        assert not any("user:42" in str(v) or "secret" in str(v) for v in a.values())


def test_spans_are_children_of_the_callers_span(exporter: Any) -> None:
    spans_out, provider = exporter
    c = polycache.Cache("memory://?max_entries=100")
    with provider.get_tracer("app").start_as_current_span("request") as request:
        c.set("k", 1)
    c.get("k")
    by_name = {s.name: s for s in finished(spans_out)}
    assert by_name["set"].parent is not None
    assert by_name["set"].parent.span_id == request.get_span_context().span_id
    assert by_name["set"].context is not None
    assert by_name["set"].context.trace_id == request.get_span_context().trace_id
    assert by_name["get"].parent is None


def test_errors_set_status_and_type_not_message(exporter: Any) -> None:
    spans_out, _ = exporter
    c = polycache.Cache("memory://?max_entries=100")
    with pytest.raises(ValueError):
        c.incr("missing-key-name")
    (span,) = finished(spans_out)
    assert span.name == "incr"
    assert span.status.status_code is StatusCode.ERROR
    assert "missing-key-name" not in (span.status.description or "")
    assert attrs(span)["error.type"].endswith("Error")
    assert not span.events  # no exception event: its message would quote the key


def test_server_attributes_never_carry_credentials(exporter: Any) -> None:
    spans_out, _ = exporter
    port = servers.free_port()  # nothing listens there
    c = polycache.Cache(f"redis://alice:s3cret@127.0.0.1:{port}/0?socket_timeout=0.5&connect_timeout=0.5")
    with pytest.raises(ConnectionError):
        c.get("k")
    (span,) = finished(spans_out)
    a = attrs(span)
    assert a["db.system.name"] == "redis"
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == port
    assert a["db.namespace"] == "0"  # the database index
    assert span.status.status_code is StatusCode.ERROR
    text = repr(a) + repr(span.status.description)
    assert "s3cret" not in text and "alice" not in text and "timeout" not in text


def test_db_namespace_as_the_conventions_define_it(exporter: Any, tmp_path: Any) -> None:
    spans_out, _ = exporter
    port = servers.free_port()  # nothing listens there
    quick = "socket_timeout=0.5&connect_timeout=0.5"
    cases = [
        (f"redis://127.0.0.1:{port}/3?{quick}", "3"),
        (f"redis://127.0.0.1:{port}?db=5&{quick}", "5"),
        (f"postgres://alice:s3cret@127.0.0.1:{port}/appdb?{quick}", "appdb"),
        (f"postgres://alice:s3cret@127.0.0.1:{port}?{quick}", None),
        (f"sqlite://{tmp_path}/cache.db", "cache.db"),
        (f"memcached://127.0.0.1:{port}?{quick}", None),
        ("memory://", None),
    ]
    for url, expected in cases:
        spans_out.clear()
        c = polycache.Cache(url)
        try:
            c.get("k")
        except (ConnectionError, TimeoutError):
            pass
        (span,) = finished(spans_out)
        assert attrs(span).get("db.namespace") == expected, url
        assert "s3cret" not in repr(attrs(span)) and "alice" not in repr(attrs(span))


def test_async_spans_join_the_context_of_the_call(exporter: Any) -> None:
    spans_out, provider = exporter
    c = polycache.Cache("memory://?max_entries=100")
    tracer = provider.get_tracer("app")

    async def main() -> None:
        with tracer.start_as_current_span("request"):
            await c.aset("k", "v")
            pending = c.aget("k")  # called here, awaited outside the request span
        assert await pending == "v"
        with tracer.start_as_current_span("other"):
            assert await c.aget_or_set("new", "x") == "x"

    asyncio.run(main())
    spans = finished(spans_out)
    request = next(s for s in spans if s.name == "request")
    other = next(s for s in spans if s.name == "other")
    for name in ("set", "get"):
        span = next(s for s in spans if s.name == name and s.parent and s.parent.span_id == request.context.span_id)
        assert attrs(span)["db.operation.name"] == name
    get_or_set = next(s for s in spans if s.name == "get_or_set")
    assert get_or_set.parent is not None and get_or_set.parent.span_id == other.context.span_id


def test_django_face_sync_and_async(exporter: Any) -> None:
    spans_out, provider = exporter
    c = django_cache("memory://otel-django")
    with provider.get_tracer("app").start_as_current_span("view") as view:
        c.set("k", "v")
        assert c.get("k") == "v"
        assert asyncio.run(c.aget("k")) == "v"
    spans = [s for s in finished(spans_out) if s.name != "view"]
    assert [s.name for s in spans][:3] == ["set", "get", "get"]
    for s in spans:
        assert attrs(s)["db.system.name"] == "polycache.memory"
        assert s.parent is not None and s.parent.span_id == view.get_span_context().span_id


def test_global_provider_by_default() -> None:
    """Without ``tracer_provider=``, spans go to the API's global provider (here: none set,
    so the proxy tracer records nothing and calls work as before)."""
    PolycacheInstrumentor().instrument()
    try:
        c = polycache.Cache("memory://?max_entries=100")
        c.set("k", "v")
        assert c.get("k") == "v"
        assert trace.get_current_span() is trace.INVALID_SPAN
    finally:
        PolycacheInstrumentor().uninstrument()


def test_flask_caching_backend_created_after_instrument(exporter: Any) -> None:
    """polycache.flask.Cache binds its hot reads at construction: made after instrument(),
    its calls are spans too (docs/observability.md says to instrument at start-up)."""
    import polycache.flask

    spans_out, _ = exporter
    c = polycache.flask.Cache("memory://otel-flask")
    c.set("k", "v")
    assert c.get("k") == "v"
    assert c.has("k")
    assert [s.name for s in finished(spans_out)] == ["set", "get", "has_key"]


class _BlockedExporter:
    """An exporter whose ``export`` waits until released, as one behind a dead collector."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.release.wait()
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


class _FailingExporter:
    def __init__(self, raises: bool) -> None:
        self.raises = raises

    def export(self, spans: Any) -> SpanExportResult:
        if self.raises:
            raise ConnectionError("collector unreachable")
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def _instrumented(processor: SpanQueue) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    PolycacheInstrumentor().instrument(tracer_provider=provider)
    return provider


def test_a_blocked_exporter_never_holds_a_call_and_its_drops_are_counted() -> None:
    blocked = _BlockedExporter()
    queue_ = SpanQueue(blocked, max_queue=64, max_batch=16)
    _instrumented(queue_)
    before = dropped_spans()
    try:
        c = polycache.Cache("memory://?max_entries=100")
        calls = 2000
        for i in range(calls):
            c.set(f"k{i % 10}", i)  # every call completes although no span can be exported
        assert c.get("k9") == 1999
        calls += 1
        dropped = dropped_spans() - before
        # The queue holds 64 and the export thread holds at most one batch of 16: the rest
        # was dropped, and counted.
        assert calls - 64 - 16 <= dropped < calls
        blocked.release.set()
        assert queue_.force_flush(10_000)
        assert blocked.exported + (dropped_spans() - before) == calls  # nothing lost uncounted
    finally:
        PolycacheInstrumentor().uninstrument()
        blocked.release.set()
        queue_.shutdown()


@pytest.mark.parametrize("raises", [False, True], ids=["failure", "raises"])
def test_a_failing_exporter_never_fails_a_call_and_its_drops_are_counted(raises: bool) -> None:
    queue_ = SpanQueue(_FailingExporter(raises), max_queue=10_000)
    _instrumented(queue_)
    before = dropped_spans()
    try:
        c = polycache.Cache("memory://?max_entries=100")
        for i in range(300):
            c.set("k", i)
        assert c.get("k") == 299
        assert queue_.force_flush(10_000)
        assert dropped_spans() - before == 301
    finally:
        PolycacheInstrumentor().uninstrument()
        queue_.shutdown()


def test_span_queue_exports_in_batches_and_refuses_bad_sizes() -> None:
    memory = InMemorySpanExporter()
    queue_ = SpanQueue(memory, max_queue=1000, max_batch=7)
    _instrumented(queue_)
    before = dropped_spans()
    try:
        c = polycache.Cache("memory://?max_entries=100")
        for i in range(50):
            c.set("k", i)
        assert queue_.force_flush(10_000)
        assert [s.name for s in memory.get_finished_spans()] == ["set"] * 50
        assert dropped_spans() == before
    finally:
        PolycacheInstrumentor().uninstrument()
        queue_.shutdown()
    with pytest.raises(ValueError, match="max_queue and max_batch must be at least 1"):
        SpanQueue(memory, max_queue=0)
