"""Per-operation counters and latency histograms in ``stats()`` and in the Prometheus text,
which ``prometheus_client``'s own parser reads: on memory:// (histograms on and off), on
Django's face, and on redis:// through a timeout and a refused connection."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import polycache
import polycache.django
from polycache import Cache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

OPS = {"get", "set", "add", "delete", "has_key", "touch", "incr", "get_many", "set_many", "delete_many", "clear"}


def known_ops(c: Any) -> None:
    c.set("a", b"hello")
    assert c.get("a") == b"hello"
    assert c.get("absent") is None
    assert c.get_many(["a", "absent"]) == {"a": b"hello"}
    c.delete("a")


def check_histogram(latency: dict[str, Any], calls: int) -> None:
    buckets = latency["buckets"]
    assert latency["count"] == calls
    assert buckets[-1] == (math.inf, calls)
    assert [b for b, _ in buckets] == sorted(b for b, _ in buckets)
    assert [n for _, n in buckets] == sorted(n for _, n in buckets), "cumulative counts"
    assert buckets[0][0] == pytest.approx(1e-7) and buckets[-2][0] == 10.0
    assert latency["sum"] >= 0.0


def parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_stats_have_every_operation() -> None:
    c = Cache("memory://?latency_sampling=1")
    known_ops(c)
    s = c.stats()
    assert set(s["ops"]) == OPS
    get = s["ops"]["get"]
    assert {k: get[k] for k in ("calls", "hits", "misses", "errors", "timeouts")} == {
        "calls": 2, "hits": 1, "misses": 1, "errors": 0, "timeouts": 0,
    }
    assert s["ops"]["get_many"]["hits"] == 1 and s["ops"]["get_many"]["misses"] == 1
    check_histogram(get["latency"], 2)
    check_histogram(s["ops"]["clear"]["latency"], 0)
    assert s["ops"]["delete"]["calls"] == 1
    assert s["bytes_written"] == s["ops"]["set"]["bytes_written"] > 0
    assert s["bytes_read"] == get["bytes_read"] + s["ops"]["get_many"]["bytes_read"]


def test_async_twins_count_as_their_operations() -> None:
    c = Cache("memory://")

    async def main() -> None:
        await c.aset("k", 1)
        await c.aget("k")
        await c.aget("absent")

    asyncio.run(main())
    get = c.stats()["ops"]["get"]
    assert (get["calls"], get["hits"], get["misses"]) == (2, 1, 1)


def test_memory_times_one_call_in_sixteen_unless_told() -> None:
    c = Cache("memory://")
    for _ in range(40):
        c.get("k")
    s = c.stats()
    assert s["latency_sampling"] == 16
    get = s["ops"]["get"]
    # Calls 0, 16 and 32 are timed; every call is counted.
    assert (get["calls"], get["misses"]) == (40, 40)
    check_histogram(get["latency"], 3)
    with pytest.raises(ValueError, match="latency_sampling"):
        Cache("memory://?latency_sampling=3")


def test_histograms_can_be_switched_off() -> None:
    c = Cache("memory://?latency_histograms=off")
    known_ops(c)
    s = c.stats()
    assert s["latency_histograms"] is False
    assert s["ops"]["get"]["calls"] == 2 and s["ops"]["get"]["latency"] is None
    families = parse(c.stats_prometheus("off"))
    assert "polycache_operation_duration_seconds" not in families
    ops = families["polycache_operations"]
    assert {(x.labels["op"], x.value) for x in ops.samples if x.name == "polycache_operations_total"} == {
        ("set", 1), ("get", 2), ("get_many", 1), ("delete", 1),
    }
    with pytest.raises(ValueError, match="latency_histograms"):
        Cache("memory://?latency_histograms=maybe")


def test_prometheus_histograms_parse_with_the_reference_parser() -> None:
    a, b = Cache("memory://?latency_sampling=1"), Cache("memory://?latency_sampling=1")
    known_ops(a)
    b.get("x")
    families = parse(polycache.render_prometheus({"a": a, "b": b}))
    h = families["polycache_operation_duration_seconds"]
    assert h.type == "histogram"
    assert h.documentation
    series: dict[tuple[str, str], dict[str, Any]] = {}
    for sample in h.samples:
        key = (sample.labels["cache"], sample.labels["op"])
        entry = series.setdefault(key, {"buckets": []})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        else:
            entry[sample.name.rsplit("_", 1)[1]] = sample.value
    assert set(series) == {("a", "set"), ("a", "get"), ("a", "get_many"), ("a", "delete"), ("b", "get")}
    for key, entry in series.items():
        buckets = entry["buckets"]
        assert len(buckets) == 26 and buckets[-1][0] == math.inf, key
        assert [n for _, n in buckets] == sorted(n for _, n in buckets), key
        assert buckets[-1][1] == entry["count"], key
        assert entry["sum"] >= 0.0
    assert series[("a", "get")]["count"] == 2 and series[("b", "get")]["count"] == 1
    outcomes = families["polycache_operation_outcomes"]
    got = {(x.labels["cache"], x.labels["op"], x.labels["outcome"]): x.value for x in outcomes.samples}
    assert got[("a", "get", "hit")] == 1 and got[("a", "get", "miss")] == 1
    assert got[("b", "get", "miss")] == 1
    assert families["polycache_breaker_transitions"].type == "counter"


def test_django_face_has_the_same_stats() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    c = polycache.django.Cache("memory://?latency_sampling=1", {})
    c.set("k", 1)
    c.get("k")
    c.get("absent")
    s = c.stats()
    assert (s["ops"]["get"]["hits"], s["ops"]["get"]["misses"]) == (1, 1)
    check_histogram(s["ops"]["get"]["latency"], 2)


@pytest.mark.skipif(
    "redis://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the redis feature (POLYCACHE_FEATURES=redis)",
)
def test_redis_timeouts_and_errors_are_counted_and_exported() -> None:
    with servers.redis_server() as server:
        c = Cache(f"{server.url}?socket_timeout=0.3&connect_timeout=0.3&breaker_threshold=1&breaker_cooldown=60")
        known_ops(c)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError):
                c.get("a")
            # The breaker opened on the timeout: the next call fails at once.
            with pytest.raises(ConnectionError):
                c.get("a")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        s = c.stats()
        get = s["ops"]["get"]
        assert (get["calls"], get["errors"], get["timeouts"]) == (4, 2, 1)
        assert (s["timeouts"], s["breaker_opened"], s["breaker_closed"]) == (1, 1, 0)
        families = parse(c.stats_prometheus("r"))
        outcomes = {
            (x.labels["op"], x.labels["outcome"]): x.value for x in families["polycache_operation_outcomes"].samples
        }
        assert outcomes[("get", "timeout")] == 1 and outcomes[("get", "error")] == 2
        transitions = {x.labels["to"]: x.value for x in families["polycache_breaker_transitions"].samples}
        assert transitions == {"open": 1, "half_open": 0, "closed": 0}
        counts = [x.value for x in families["polycache_operation_duration_seconds"].samples
                  if x.name.endswith("_count") and x.labels["op"] == "get"]
        assert counts == [4]
