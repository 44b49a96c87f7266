"""A cache used before fork() (gunicorn --preload, uWSGI without lazy-apps) keeps giving
right answers in the children: each process gets its own connections, never its parent's."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator

import pytest

from polycache import Cache

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILDREN = 4
ROUNDS = 300


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(servers.redis_server())
        memcached = stack.enter_context(servers.memcached_server())
        postgres = stack.enter_context(servers.postgres_server())
        db = tmp_path_factory.mktemp("fork") / "fork.db"
        yield {
            "redis": redis.url,
            "memcached": memcached.url,
            "postgres": f"{postgres.url}?table=fork_cache",
            "sqlite": f"sqlite://{db}",
        }


def work(cache: Cache, me: int) -> int:
    """ROUNDS writes and reads of values only this process writes, and as many incr; returns
    how many answers were wrong."""
    wrong = 0
    for i in range(ROUNDS):
        key = f"p{me}-{i}"
        cache.set(key, (me, i, "x" * (i % 50)))
        if cache.get(key) != (me, i, "x" * (i % 50)):
            wrong += 1
        if cache.get_many([key, f"p{me}-absent"]) != {key: (me, i, "x" * (i % 50))}:
            wrong += 1
        cache.incr("counter")
    return wrong


def in_children_and_parent(body: Callable[[int], int]) -> dict[int, int]:
    """Runs ``body(n)`` in CHILDREN forked children (n = 1…) and then in this process (n = 0);
    answers each one's result (a child's exit code: capped at 254, 255 for an exception)."""
    pids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process, 3.12+
        for child in range(1, CHILDREN + 1):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 255
                try:
                    code = min(body(child), 254)
                except BaseException as e:  # noqa: BLE001 - reported through the exit code
                    print(f"child {child}: {e!r}", file=sys.stderr, flush=True)
                os._exit(code)
            pids.append(pid)
    results = {0: body(0)}
    for child, pid in enumerate(pids, 1):
        _, status = os.waitpid(pid, 0)
        results[child] = os.waitstatus_to_exitcode(status)
    return results


@pytest.mark.parametrize("scheme", ["redis", "memcached", "postgres", "sqlite"])
def test_children_of_a_fork_never_share_the_parents_connections(scheme: str, urls: dict[str, str]) -> None:
    cache = Cache(urls[scheme], key_prefix=f"fork-{scheme}")
    cache.set("counter", 0, timeout=None)
    # The parent has pooled (idle) connections when it forks.
    assert cache.get("counter") == 0
    assert cache.get_many(["counter", "nothing"]) == {"counter": 0}
    wrong = in_children_and_parent(lambda me: work(cache, me))
    assert wrong == {n: 0 for n in range(CHILDREN + 1)}, "wrong answers (255: an exception) per process"
    assert cache.get("counter") == ROUNDS * (CHILDREN + 1)
    cache.close()



async def awork(cache: Cache, me: int) -> int:
    """ROUNDS awaited writes and reads of values only this process writes; returns how many
    answers were wrong."""
    wrong = 0
    for i in range(ROUNDS):
        key = f"a{me}-{i}"
        await cache.aset(key, (me, i))
        if await cache.aget(key) != (me, i):
            wrong += 1
    return wrong


def test_a_child_running_its_parents_event_loop_gets_a_completion_queue_of_its_own(urls: dict[str, str]) -> None:
    # The parent's loop watches the parent's completion queue (an eventfd); a child that keeps
    # running that loop must neither read that descriptor (the parent's wake-ups would be
    # lost and its awaits would hang) nor have its own answers read by the parent.
    import asyncio

    cache = Cache(urls["redis"], key_prefix="fork-async")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(cache.aset("warm", 1))
        assert loop.run_until_complete(cache.aget("warm")) == 1

        def work_in(me: int) -> int:
            try:
                return loop.run_until_complete(asyncio.wait_for(awork(cache, me), 60))
            except asyncio.TimeoutError:
                return 253  # a hang is reported, not waited for forever

        # The parent runs its own copy of the loop at the same time as the children.
        wrong = in_children_and_parent(work_in)
        assert wrong == {n: 0 for n in range(CHILDREN + 1)}, "wrong answers (253: a hang, 255: an exception) per process"
        assert loop.run_until_complete(cache.aget("a1-0")) == (1, 0)
    finally:
        loop.close()
        cache.close()
