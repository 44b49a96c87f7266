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
from typing import Any, ClassVar

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
    assert job.get(1) == {"n": 1, "call": 1}  # the stale value...
    assert job.fetched == [1, 1]  # ...returned after the refresh ran in the caller
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


# --- polycache.Job in a Django project ---------------------------------------------------


class Doubler(polycache.Job):
    lifetime = 60
    fetched: ClassVar[list[int]] = []

    def fetch(self, n: int) -> int:
        Doubler.fetched.append(n)
        return 2 * n


def test_polycache_job_uses_djangos_caches_by_alias_and_by_object(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a Django project that never called polycache.caches.configure.
    monkeypatch.setattr(polycache.caches, "_explicit", False)
    Doubler.fetched.clear()
    by_alias = Doubler()  # cache = "default": Django's CACHES["default"]
    assert by_alias.get(2) == 4
    by_object = Doubler(cache=caches["default"])
    assert by_object.get(2) == 4  # the same store: not fetched again
    assert Doubler.fetched == [2]
    assert by_object.delete(2) and by_alias.get(2) == 4
    assert Doubler.fetched == [2, 2]
    # The entry lives in Django's cache, under Django's key prefix and version.
    assert caches["default"].has_key(by_alias.key(2))
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}):
        with pytest.raises(TypeError, match="LocMemCache"):
            Doubler().get(2)


def test_cachebacks_hooks_are_honoured(location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(polycache.caches, "_explicit", False)
    results: list[tuple[Any, int, bool | None]] = []
    deltas: list[float] = []

    class Hooked(polycache.Job):
        lifetime = 0.05
        calls = 0

        def fetch(self, n: int) -> int:
            Hooked.calls += 1
            return Hooked.calls

        def should_missing_item_be_fetched_synchronously(self, n: int) -> bool:
            return n == 1

        def should_stale_item_be_fetched_synchronously(self, delta: float, n: int) -> bool:
            deltas.append(delta)
            return True

        def process_result(
            self, result: Any, call: polycache.Call, cache_status: int, sync_fetch: bool | None = None
        ) -> Any:
            results.append((result, cache_status, sync_fetch))
            return result

    job = Hooked()
    assert job.get(1) == 1  # a miss fetched in the caller (the hook says so for 1)
    assert job.get(1) == 1
    assert job.get(2) is None  # a miss left to the background (the hook says so for 2)
    time.sleep(0.1)
    assert job.get(1) == Hooked.calls  # stale: the hook fetches in the caller
    assert deltas and deltas[0] > 0
    assert [(status, sync) for _, status, sync in results] == [
        (Job.MISS, True), (Job.HIT, None), (Job.MISS, False), (Job.STALE, True)
    ]
    assert (polycache.Job.MISS, polycache.Job.HIT, polycache.Job.STALE) == (Job.MISS, Job.HIT, Job.STALE)


def test_cachebacks_hooks_without_a_meaning_are_refused() -> None:
    class Queued(polycache.Job):
        def fetch(self) -> int:
            return 1

        def async_refresh(self, *args: Any, **kwargs: Any) -> None: ...

    with pytest.raises(TypeError, match="async_refresh"):
        Queued()

    class Threshold(polycache.Job):
        fetch_on_stale_threshold = 10

    with pytest.raises(TypeError, match="should_stale_item_be_fetched_synchronously"):
        Threshold()
