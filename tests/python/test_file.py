"""The file:// backend through the Python binding: operations, bad input, several processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import polycache
from polycache import Cache
from polycache.exceptions import BackendError, ConfigurationError, KeyNotFoundError

pytestmark = pytest.mark.skipif(
    "file://" not in polycache.SCHEMES,
    reason="this wheel was built without the file feature (POLYCACHE_FEATURES=file)",
)


def entry_files(root: Path) -> list[Path]:
    """The files of large entries (small ones are records in root/packs/*)."""
    return [p for p in root.glob("[0-9a-f][0-9a-f]/*") if len(p.name) == 32]


LARGE = "x" * 5000  # over the 2 KiB a pack record may hold: a file of its own


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_django_operations(cache_dir: Path) -> None:
    c = Cache(f"file://{cache_dir}?max_entries=1000")
    assert not c.is_local
    assert c.get("a") is None
    c.set("a", {"x": [1, 2, 3]})
    assert c.get("a") == {"x": [1, 2, 3]}
    assert c.add("a", 5) is False
    assert c.add("b", 5) is True
    assert c.incr("b", 10) == 15
    assert c.decr("b") == 14
    with pytest.raises(KeyNotFoundError):
        c.incr("missing")
    c.set_many({"m1": "one", "m2": b"two"})
    assert c.get_many(["m1", "m2", "nope"]) == {"m1": "one", "m2": b"two"}
    assert c.has_key("m1")
    assert c.delete("m1") is True
    assert c.delete("m1") is False
    assert c.touch("m2", None) is True
    assert c.get_or_set("g", lambda: "computed") == "computed"
    c.set("gone", 1, timeout=0)
    assert c.get("gone") is None
    c.set("big", LARGE)
    assert c.get("big") == LARGE
    assert len(entry_files(cache_dir)) == 1  # only the large value has a file
    assert {p.name for p in (cache_dir / "packs").iterdir()} <= set("0123456789abcdef")
    c.clear()
    assert entry_files(cache_dir) == []
    for key in ("a", "b", "m2", "g", "big"):
        assert c.get(key) is None


def test_entries_survive_reopening(cache_dir: Path) -> None:
    Cache(f"file://{cache_dir}", key_prefix="app").set("k", "persisted", timeout=None)
    assert Cache(f"file://{cache_dir}", key_prefix="app").get("k") == "persisted"
    assert Cache(f"file://{cache_dir}", key_prefix="other").get("k") is None


def test_bad_locations_name_the_problem(tmp_path: Path) -> None:
    for bad in ("file://", "file://./relative", "file://relative/dir"):
        with pytest.raises(ConfigurationError, match="absolute"):
            Cache(bad)
    with pytest.raises(ConfigurationError, match="max_entires"):
        Cache(f"file://{tmp_path}/c?max_entires=3")
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    with pytest.raises(BackendError, match="a-file"):
        Cache(f"file://{blocker}/cache")


def test_async_twins(cache_dir: Path) -> None:
    c = Cache(f"file://{cache_dir}")

    async def scenario() -> None:
        await c.aset("k", "v")
        assert await c.aget("k") == "v"
        assert await c.aadd("n", 1) is True
        assert await c.aincr("n", 2) == 3

    asyncio.run(scenario())


def test_a_corrupt_entry_reads_as_a_miss_and_is_removed(cache_dir: Path) -> None:
    c = Cache(f"file://{cache_dir}?reconcile_interval=none")
    c.set("k", "precious value")
    (pack,) = [p for p in (cache_dir / "packs").iterdir() if p.read_bytes().find(b"precious value") > 0]
    data = bytearray(pack.read_bytes())
    data[data.find(b"precious value")] ^= 0x20
    pack.write_bytes(bytes(data))
    assert c.get("k") is None
    assert c.add("k", "fresh") is True  # the damaged record is gone, not in the way
    assert c.get("k") == "fresh"

    c.set("big", LARGE)
    (path,) = entry_files(cache_dir)
    path.write_bytes(path.read_bytes()[:-2])
    assert c.get("big") is None
    assert not path.exists()
    c.set("big", LARGE)
    path.write_bytes(b"GIF89a not an entry")
    assert c.get("big", "default") == "default"
    assert not path.exists()


def test_incr_from_four_processes_is_exact(cache_dir: Path) -> None:
    c = Cache(f"file://{cache_dir}")
    c.set("n", 0, timeout=None)
    worker = textwrap.dedent(
        f"""
        import polycache
        c = polycache.Cache({f"file://{cache_dir}"!r})
        for _ in range(250):
            c.incr("n")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", worker]) for _ in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert c.get("n") == 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_incr_stays_exact_in_forked_children(cache_dir: Path) -> None:
    # A cache opened before a fork (gunicorn --preload) must not share its locks with the
    # children: flock locks belong to the open file, which a fork shares. No background scan
    # (reconcile_interval=none), so no thread of the parent holds a lock at the fork.
    c = Cache(f"file://{cache_dir}?reconcile_interval=none")
    c.set("n", 0, timeout=None)
    pids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process, 3.12+
        for _ in range(3):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 0
                try:
                    for _ in range(300):
                        c.incr("n")
                except BaseException:
                    code = 1
                os._exit(code)
            pids.append(pid)
    for _ in range(300):
        c.incr("n")
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert c.get("n") == 1200


def test_files_are_private(cache_dir: Path) -> None:
    c = Cache(f"file://{cache_dir}")
    c.set("k", "v")
    c.set("big", LARGE)
    assert cache_dir.stat().st_mode & 0o777 == 0o700
    paths = list(cache_dir.rglob("*"))
    assert len(paths) > 4
    for path in paths:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
        assert os.path.commonpath([path.resolve(), cache_dir.resolve()]) == str(cache_dir.resolve())


def test_cull_frequency_as_django_passes_it(cache_dir: Path) -> None:
    c = Cache(f"file://{cache_dir}?max_entries=30&cull_frequency=3")
    for i in range(1, 50):
        c.set(f"cull{i}", "value")
    assert sum(c.has_key(f"cull{i}") for i in range(1, 50)) == 29
    z = Cache(f"file://{cache_dir.parent / 'zero'}?max_entries=30&cull_frequency=0")
    for i in range(1, 50):
        z.set(f"cull{i}", "value")
    assert sum(z.has_key(f"cull{i}") for i in range(1, 50)) == 19
