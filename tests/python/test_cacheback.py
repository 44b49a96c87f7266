"""django-cacheback on ``polycache.django.Cache``, with refreshes run synchronously (no Celery).

cacheback refreshes a missing item in the caller when ``fetch_on_miss`` is true and a stale
one when it is older than ``fetch_on_stale_threshold``; its asynchronous path goes through a
task queue (``CACHEBACK_TASK_QUEUE``), which the jobs here replace with a synchronous
refresh so no Celery or RQ is needed.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure()
django.setup()

from cacheback.base import Job  # type: ignore[import-untyped]  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.test import override_settings  # noqa: E402

import polycache  # noqa: E402
from polycache.django import Cache  # noqa: E402

_stores = itertools.count()


class SyncJob(Job):  # type: ignore[misc]
    """A cacheback job whose background refresh runs in the caller."""

    lifetime = 1
    fetch_on_miss = True

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[Any] = []

    def async_refresh(self, *args: Any, **kwargs: Any) -> None:
        self.refresh(*args, **kwargs)

    def fetch(self, n: int) -> dict[str, Any]:
        self.fetched.append(n)
        return {"n": n, "call": len(self.fetched)}


class StaleFetchingJob(SyncJob):
    fetch_on_stale_threshold = 1


@pytest.fixture
def location() -> Iterator[str]:
    name = f"memory://cacheback-test-{next(_stores)}"
    with override_settings(
        CACHES={"default": {"BACKEND": "polycache.django.Cache", "LOCATION": name}},
        CACHEBACK_TASK_QUEUE="rq",
    ):
        assert isinstance(caches["default"], Cache)
        yield name


def test_miss_then_hit(location: str) -> None:
    job = SyncJob()
    assert job.get(7) == {"n": 7, "call": 1}
    assert job.get(7) == {"n": 7, "call": 1}
    assert job.get(8) == {"n": 8, "call": 2}
    assert job.fetched == [7, 8]
    expiry, data = job.raw_get(7)
    assert data == {"n": 7, "call": 1} and expiry > time.time()


def test_entries_are_in_the_polycache_store(location: str) -> None:
    job = SyncJob()
    job.get(1)
    key = job.key(1)
    expiry, data = polycache.Cache(location).get(key)
    assert data == {"n": 1, "call": 1}


def test_stale_item_is_served_while_refreshed(location: str) -> None:
    job = SyncJob()
    job.get(1)
    time.sleep(1.2)  # past the 1 s lifetime: stale
    assert job.get(1) == {"n": 1, "call": 1}  # the stale value, refreshed behind it
    assert job.get(1) == {"n": 1, "call": 2}
    assert job.fetched == [1, 1]


def test_too_stale_item_is_fetched_synchronously(location: str) -> None:
    job = StaleFetchingJob()
    job.get(1)
    time.sleep(1.2)
    assert job.get(1) == {"n": 1, "call": 2}


def test_invalidate_set_and_delete(location: str) -> None:
    job = SyncJob()
    job.get(1)
    job.invalidate(1)
    assert job.fetched == [1, 1]
    job.set(1, {"manual": True})
    assert job.get(1) == {"manual": True}
    job.delete(1)
    assert job.raw_get(1) is None
    assert job.get(1) == {"n": 1, "call": 3}


def test_without_the_override_cacheback_falls_back_to_a_synchronous_refresh(
    location: str, caplog: pytest.LogCaptureFixture
) -> None:
    class QueueJob(Job):  # type: ignore[misc]
        lifetime = 60
        calls = 0

        def fetch(self) -> int:
            QueueJob.calls += 1
            return QueueJob.calls

    job = QueueJob()
    assert job.get() == 1
    with caplog.at_level(logging.CRITICAL, logger="cacheback"):
        job.invalidate()  # no task queue configured: cacheback refreshes in the caller
    assert job.get() == 2
