"""`memory://` get hits in a loop, for counting instructions per call under valgrind with
polycache.otel off, instrumented then uninstrumented, instrumented with no SDK, and
instrumented with an SDK that records every span (docs/observability.md has the figures):

    valgrind --tool=callgrind .venv/bin/python bench/python/otel_get_loop.py MODE N

MODE: off, uninstrumented, nosdk or recording. Per call: the difference between two N.
"""

from __future__ import annotations

import sys
from typing import Any

import polycache

mode, n = sys.argv[1], int(sys.argv[2])
c = polycache.Cache("memory://?max_entries=100000")
c.set("hit-key", "abcdefghijklmnop")
if mode != "off":
    from polycache.otel import PolycacheInstrumentor

    provider: Any = None
    if mode == "recording":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

        class Discard(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Discard()))
    PolycacheInstrumentor().instrument(tracer_provider=provider)
    if mode == "uninstrumented":
        PolycacheInstrumentor().uninstrument()
for _ in range(n):
    c.get("hit-key")
