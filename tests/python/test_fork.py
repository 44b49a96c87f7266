"""A cache used before fork() (gunicorn --preload, uWSGI without lazy-apps) keeps giving
right answers in the children: each process gets its own connections, never its parent's."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

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


@pytest.mark.parametrize("scheme", ["redis", "memcached", "postgres", "sqlite"])
def test_children_of_a_fork_never_share_the_parents_connections(scheme: str, urls: dict[str, str]) -> None:
    cache = Cache(urls[scheme], key_prefix=f"fork-{scheme}")
    cache.set("counter", 0, timeout=None)
    # The parent has pooled (idle) connections when it forks.
    assert cache.get("counter") == 0
    assert cache.get_many(["counter", "nothing"]) == {"counter": 0}
    pids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process, 3.12+
        for child in range(1, CHILDREN + 1):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 255
                try:
                    code = min(work(cache, child), 254)
                except BaseException as e:  # noqa: BLE001 - reported through the exit code
                    print(f"child {child}: {e!r}", file=sys.stderr, flush=True)
                os._exit(code)
            pids.append(pid)
    wrong = {0: work(cache, 0)}
    for child, pid in enumerate(pids, 1):
        _, status = os.waitpid(pid, 0)
        wrong[child] = os.waitstatus_to_exitcode(status)
    assert wrong == {n: 0 for n in range(CHILDREN + 1)}, "wrong answers (255: an exception) per process"
    assert cache.get("counter") == ROUNDS * (CHILDREN + 1)
    cache.close()

