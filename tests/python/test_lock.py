"""Locks with redis-py's semantics (``cache.lock(...)``) on every backend.

The semantics run on memory:// (one process); exclusion and lapsing run with real
processes on every backend a second process can share (on memory:// the holders are
threads, since a memory store lives in one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

import polycache
from polycache import Cache, LockError, LockNotOwnedError

sys.path.insert(0, os.path.dirname(__file__))
import servers  # noqa: E402


def test_acquire_release_and_ownership(cache: Cache) -> None:
    lock = cache.lock("job", timeout=30)
    other = cache.lock("job", timeout=30)
    assert not lock.locked() and not lock.owned()
    assert lock.acquire(blocking=False)
    assert lock.locked() and lock.owned()
    assert other.locked() and not other.owned()
    assert not other.acquire(blocking=False)
    # A blocking acquire whose next try would come after its blocking_timeout gives up.
    assert not other.acquire(blocking_timeout=0.05, sleep=0.2)
    lock.release()
    assert not lock.locked()
    assert other.acquire(blocking=False)
    other.release()


def test_the_key_is_made_with_the_prefix_and_version() -> None:
    cache = Cache("memory://", key_prefix="site", version=3)
    lock = cache.lock("job")
    assert lock.key == cache.make_key("job").encode()
    with lock:
        assert cache.lock("job", version=3).locked()
        assert not cache.lock("job", version=4).locked()


def test_a_non_owner_gets_lock_not_owned_and_the_lock_is_untouched(cache: Cache) -> None:
    holder = cache.lock("job", timeout=30)
    assert holder.acquire(token="holder")
    intruder = cache.lock("job", timeout=30)
    intruder.local.token = b"intruder"
    with pytest.raises(LockNotOwnedError):
        intruder.release()
    intruder.local.token = b"intruder"
    with pytest.raises(LockNotOwnedError):
        intruder.extend(60)
    intruder.local.token = b"intruder"
    with pytest.raises(LockNotOwnedError):
        intruder.reacquire()
    assert holder.owned()
    assert issubclass(LockNotOwnedError, LockError)
    holder.release()
    with pytest.raises(LockError, match="unlocked"):
        holder.release()


def test_extend_and_reacquire(cache: Cache) -> None:
    lock = cache.lock("job", timeout=0.2)
    with pytest.raises(LockError, match="unlocked"):
        lock.extend(1)
    assert lock.acquire()
    assert lock.extend(600) is True
    assert lock.extend(600, replace_ttl=True) is True
    assert lock.reacquire() is True
    lock.release()
    forever = cache.lock("forever")
    assert forever.acquire()
    with pytest.raises(LockError, match="no timeout"):
        forever.extend(1)
    with pytest.raises(LockError, match="no timeout"):
        forever.reacquire()
    forever.release()


def test_a_lapsed_lock_can_be_taken_and_its_old_holder_is_refused(cache: Cache) -> None:
    old = cache.lock("job", timeout=0.1)
    assert old.acquire()
    new = cache.lock("job", timeout=30)
    assert new.acquire(blocking_timeout=30, sleep=0.02)
    with pytest.raises(LockNotOwnedError):
        old.release()
    assert new.owned()
    new.release()


def test_tokens_are_per_thread_unless_thread_local_is_off(cache: Cache) -> None:
    shared = cache.lock("job", timeout=30)
    assert shared.acquire()
    seen: list[object] = []

    def other_thread() -> None:
        seen.append(shared.owned())
        try:
            shared.release()
        except LockError as err:
            seen.append(type(err))

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert seen == [False, LockError]
    assert shared.owned()
    shared.release()

    handed = cache.lock("job", timeout=30, thread_local=False)
    assert handed.acquire()
    t = threading.Thread(target=handed.release)
    t.start()
    t.join()
    assert not handed.locked()


def test_context_managers(cache: Cache) -> None:
    with cache.lock("job", timeout=30) as lock:
        assert lock.owned()
    assert not lock.locked()
    held = cache.lock("busy")
    assert held.acquire()
    with pytest.raises(LockError, match="Unable to acquire"), cache.lock("busy", blocking=False):
        pass
    held.release()


def test_async_twins_do_not_block_the_loop() -> None:
    async def main(cache: Cache) -> None:
        holder = cache.lock("job", timeout=30)
        assert await holder.aacquire()
        assert await holder.alocked() and await holder.aowned()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        waiter = cache.lock("job", timeout=30)
        # The waiter sleeps between tries on the runtime; the loop keeps running.
        assert not await waiter.aacquire(blocking_timeout=0.3, sleep=0.05)
        assert ticks > 0
        assert await holder.aextend(10) is True
        assert await holder.areacquire() is True
        await holder.arelease()
        async with cache.lock("job", timeout=30) as lock:
            assert await lock.aowned()
        assert not await lock.alocked()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main(Cache("memory://")))


def test_django_face_uses_django_keys() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    django.setup()
    from polycache.django import Cache as DjangoCache

    cache = DjangoCache("memory://locks-django", {"KEY_PREFIX": "site", "VERSION": 2})
    lock = cache.lock("job", timeout=30)
    assert lock.key == b"site:2:job"
    with lock:
        assert cache.lock("job", version=2).locked()
        assert not cache.lock("job").owned()
    with pytest.raises(TypeError, match="client"):
        cache.lock("job", client=object())


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"timeout": -1}, {"timeout": float("nan")}, {"sleep": -1}, {"blocking_timeout": -1}],
)
def test_bad_arguments_are_clear_errors(cache: Cache, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        cache.lock("job", **kwargs)  # type: ignore[arg-type]


def test_bad_tokens_and_times(cache: Cache) -> None:
    lock = cache.lock("job", timeout=30)
    with pytest.raises(TypeError, match="token"):
        lock.acquire(token=5)  # type: ignore[arg-type]
    assert lock.acquire()
    with pytest.raises(ValueError):
        lock.extend(-1)
    with pytest.raises(ValueError):
        lock.extend(float("inf"))
    assert lock.owned()
    lock.release()


def test_the_locks_example_of_the_python_guide_runs() -> None:
    guide = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "python.md")
    with open(guide, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("\n## Locks\n") :]
    code = section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")]
    namespace: dict[str, object] = {}
    exec(compile(code, guide, "exec"), namespace)
    assert not namespace["lock"].locked()  # type: ignore[attr-defined]


def test_lock_is_exported() -> None:
    assert polycache.Lock is type(Cache("memory://").lock("x"))


# ---- Several holders at once: threads on memory://, processes elsewhere.

HOLDERS = 4
ROUNDS = 15

WORKER = textwrap.dedent(
    """
    import sys, time
    from polycache import Cache
    url, prefix, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = Cache(url, key_prefix=prefix)
    overlaps = 0
    for _ in range(rounds):
        with cache.lock("shared", timeout=30, sleep=0.005):
            if cache.incr("holders") != 1:
                overlaps += 1
            time.sleep(0.002)
            cache.incr("done")
            cache.decr("holders")
    print(overlaps)
    """
)

DIES_HOLDING = textwrap.dedent(
    """
    import sys, time
    from polycache import Cache
    url, prefix = sys.argv[1], sys.argv[2]
    lock = Cache(url, key_prefix=prefix).lock("dead", timeout=5)
    assert lock.acquire(blocking=False)
    print("held", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(servers.redis_server())
        memcached = stack.enter_context(servers.memcached_server())
        postgres = stack.enter_context(servers.postgres_server())
        base = tmp_path_factory.mktemp("locks")
        yield {
            "redis": redis.url,
            "memcached": memcached.url,
            "postgres": f"{postgres.url}?table=lock_cache",
            "sqlite": f"sqlite://{base / 'locks.db'}",
            "file": f"file://{base / 'files'}",
        }


SCHEMES = ["redis", "memcached", "postgres", "sqlite", "file"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_processes_never_hold_the_lock_at_once(scheme: str, urls: dict[str, str]) -> None:
    prefix = f"excl-{scheme}"
    cache = Cache(urls[scheme], key_prefix=prefix)
    cache.set("holders", 0, timeout=None)
    cache.set("done", 0, timeout=None)
    argv = [sys.executable, "-c", WORKER, urls[scheme], prefix, str(ROUNDS)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(HOLDERS)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * HOLDERS
    assert [int(o) for o in outs] == [0] * HOLDERS, "two processes held the lock at once"
    assert cache.get("done") == HOLDERS * ROUNDS
    assert cache.get("holders") == 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_killed_holders_lock_lapses(scheme: str, urls: dict[str, str]) -> None:
    prefix = f"dead-{scheme}"
    argv = [sys.executable, "-c", DIES_HOLDING, urls[scheme], prefix]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "held\n"
            lock = Cache(urls[scheme], key_prefix=prefix).lock("dead", timeout=30)
            assert not lock.acquire(blocking=False), "the child holds it"
        finally:
            os.kill(child.pid, signal.SIGKILL)
    # Nobody releases it: it lapses after the dead holder's timeout.
    assert lock.acquire(blocking_timeout=60, sleep=0.1)
    assert lock.owned()
    lock.release()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_extend_and_refusals_on_shared_backends(scheme: str, urls: dict[str, str]) -> None:
    cache = Cache(urls[scheme], key_prefix=f"ext-{scheme}")
    lock = cache.lock("job", timeout=30)
    assert lock.acquire(blocking=False)
    assert lock.extend(30) is True
    assert lock.extend(30, replace_ttl=True) is True
    assert lock.reacquire() is True
    intruder = cache.lock("job", timeout=30)
    intruder.local.token = b"intruder"
    with pytest.raises(LockNotOwnedError):
        intruder.extend(30)
    intruder.local.token = b"intruder"
    with pytest.raises(LockNotOwnedError):
        intruder.release()
    assert lock.owned()
    lock.release()
    assert not lock.locked()


def test_threads_never_hold_a_memory_lock_at_once() -> None:
    cache = Cache("memory://")
    cache.set("holders", 0, timeout=None)
    overlaps: list[int] = []

    def work() -> None:
        for _ in range(ROUNDS * 4):
            with cache.lock("shared", timeout=30, sleep=0.001):
                if cache.incr("holders") != 1:
                    overlaps.append(1)
                cache.decr("holders")

    threads = [threading.Thread(target=work) for _ in range(HOLDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert cache.get("holders") == 0


def test_a_dead_threads_memory_lock_lapses() -> None:
    cache = Cache("memory://")
    dead = cache.lock("dead", timeout=0.3)
    t = threading.Thread(target=lambda: dead.acquire(blocking=False))
    t.start()
    t.join()
    # The thread ended holding it; its token died with it (thread-local).
    assert dead.locked() and not dead.owned()
    with pytest.raises(LockError):
        dead.release()
    taker = cache.lock("dead", timeout=30)
    assert taker.acquire(blocking_timeout=30, sleep=0.02)
    taker.release()
