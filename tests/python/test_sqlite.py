"""polycache.Cache on sqlite://: the SQL table from Python, across threads and processes.

Skipped with a reason when the installed wheel was built without the ``sqlite`` feature.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import polycache
from polycache import Cache

pytestmark = pytest.mark.skipif(
    "sqlite://" not in polycache.SCHEMES,
    reason="this polycache wheel was built without the sqlite feature (POLYCACHE_FEATURES=sqlite)",
)


class Point:
    """A picklable user object (module level, so pickle can find it)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cache.db"


@pytest.fixture
def cache(db: Path) -> Iterator[Cache]:
    c = Cache(f"sqlite://{db}", key_prefix="py")
    yield c
    c.close()


# Raw SQL runs in a child process: two copies of SQLite in one process (Python's sqlite3 and
# the one inside polycache) do not see each other's POSIX locks, and closing one copy's
# connection drops the other's locks (see docs/backends/sqlite.md).
RAW_SQL = """
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA busy_timeout = 10000")
rows = []
for sql in json.loads(sys.argv[2]):
    rows = [[v.hex() if isinstance(v, bytes) else v for v in row] for row in con.execute(sql).fetchall()]
print(json.dumps(rows))
"""

HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
con.execute("COMMIT")
"""


def raw_sql(db: Path, *statements: str) -> list[list[Any]]:
    """The rows of the last statement, run by another process's sqlite3 (bytes as hex)."""
    out = subprocess.run(
        [sys.executable, "-c", RAW_SQL, str(db), json.dumps(statements)], check=True, capture_output=True, text=True
    ).stdout
    rows: list[list[Any]] = json.loads(out)
    return rows


def key_hash(full_key: str) -> int:
    """The table's key hash: the first 8 bytes of SHA-256, big-endian, signed (Solid Cache's)."""
    return int.from_bytes(hashlib.sha256(full_key.encode()).digest()[:8], "big", signed=True)


def test_is_remote_and_has_its_location(db: Path) -> None:
    c = Cache(f"sqlite://{db}?table=t1")
    assert not c.is_local, "disk I/O releases the GIL"
    assert c.location == f"sqlite://{db}?table=t1"


@pytest.mark.parametrize("value", [0, -7, 2**62, "text", "ünï", b"\x00bytes", 1.5, None, [1, "a"], {"k": [1, 2]}, Point(1, 2)])
def test_values_round_trip(cache: Cache, value: Any) -> None:
    cache.set("v", value)
    assert cache.get("v", default="missing") == value


def test_operations(cache: Cache) -> None:
    assert cache.get("nope", default=42) == 42
    assert cache.add("a", 1)
    assert not cache.add("a", 2)
    assert cache.incr("a", 10) == 11
    assert cache.decr("a") == 10
    assert cache.get("a") == 10
    with pytest.raises(ValueError):
        cache.incr("missing")
    cache.set("word", "abc")
    with pytest.raises(polycache.NotAnIntegerError):
        cache.incr("word")
    cache.set("big", 2**63 - 1)
    with pytest.raises(OverflowError):
        cache.incr("big")
    assert cache.has_key("a")
    assert cache.touch("a", 100)
    assert not cache.touch("nope", 100)
    cache.set_many({"x": 1, "y": {"nested": True}, "z": "zed"}, timeout=None)
    assert cache.get_many(["x", "y", "nope", "z"]) == {"x": 1, "y": {"nested": True}, "z": "zed"}
    cache.delete_many(["x", "y"])
    assert cache.get_many(["x", "y", "z"]) == {"z": "zed"}
    assert cache.delete("z")
    assert not cache.delete("z")
    assert cache.get_or_set("lazy", lambda: "made") == "made"
    assert cache.get_or_set("lazy", lambda: "again") == "made"
    cache.clear()
    assert cache.get("a") is None
    stats = cache.stats()
    assert stats["hits"] > 0 and stats["misses"] > 0


def test_expiry_words(cache: Cache) -> None:
    cache.set("short", "x", timeout=0.05)
    cache.set("forever", "x", timeout=None)
    cache.set("gone", "old")
    cache.set("gone", "new", timeout=0)
    assert cache.get("gone") is None
    time.sleep(0.15)
    assert cache.get("short") is None
    assert cache.get("forever") == "x"


def test_rows_are_solid_cache_shaped(db: Path, cache: Cache) -> None:
    cache.set("k", "v")
    assert raw_sql(db, "PRAGMA journal_mode") == [["wal"]]
    rows = raw_sql(db, "SELECT key_hash, key, byte_size, length(value), expires_at FROM polycache_cache")
    [[h, key, size, value_len, expires_at]] = rows
    assert bytes.fromhex(key) == b"py:1:k"
    assert h == key_hash("py:1:k")
    assert size == len(b"py:1:k") + value_len
    assert time.time() * 1000 < expires_at <= (time.time() + 300) * 1000


def test_clear_is_scoped_to_the_prefix(db: Path) -> None:
    a = Cache(f"sqlite://{db}", key_prefix="a")
    b = Cache(f"sqlite://{db}", key_prefix="b")
    a.set("k", 1)
    b.set("k", 2)
    a.clear()
    assert a.get("k") is None
    assert b.get("k") == 2
    Cache(f"sqlite://{db}").clear()
    assert b.get("k") is None


def test_a_corrupt_row_reads_as_a_miss(db: Path, cache: Cache) -> None:
    cache.set("k", "value")
    cache.set("other", "fine")
    raw_sql(db, "UPDATE polycache_cache SET byte_size = byte_size + 1 WHERE key = CAST('py:1:k' AS BLOB)")
    assert cache.get("k", default="miss") == "miss"
    assert cache.get("other") == "fine"


def test_threads_share_one_cache(cache: Cache) -> None:
    cache.set("n", 0)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                cache.incr("n")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.get("n") == 800


def test_processes_incr_one_key_exactly(db: Path, cache: Cache) -> None:
    cache.set("n", 0)
    script = (
        "import sys, polycache\n"
        "c = polycache.Cache(sys.argv[1], key_prefix='py')\n"
        "for _ in range(250):\n"
        "    c.incr('n')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, f"sqlite://{db}"]) for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    assert cache.get("n") == 1000


def test_a_locked_database_raises_timeout_error(db: Path) -> None:
    c = Cache(f"sqlite://{db}?busy_timeout=0.1&breaker_threshold=0")
    c.set("k", "before")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(polycache.TimeoutError) as info:
            c.set("k", "during")
        assert isinstance(info.value, TimeoutError)
        assert "busy_timeout" in str(info.value)
        assert time.monotonic() - started < 5
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
    assert c.set("k", "after")
    assert c.get("k") == "after"


def test_memory_database() -> None:
    c = Cache("sqlite://:memory:")
    c.set("k", {"a": 1})
    assert c.get("k") == {"a": 1}


@pytest.mark.parametrize(
    ("location", "named"),
    [
        ("sqlite://relative.db", "absolute"),
        ("sqlite:///tmp/x.db?table=bad;name", "table"),
        ("sqlite:///tmp/x.db?busy_timeout=-1", "busy_timeout"),
        ("sqlite:///tmp/x.db?synchronous=sometimes", "synchronous"),
        ("sqlite:///dev/null/sub/x.db", "is not a directory"),
    ],
)
def test_bad_locations_are_configuration_errors(location: str, named: str) -> None:
    with pytest.raises(polycache.ConfigurationError, match=named) as info:
        Cache(location)
    assert isinstance(info.value, ValueError)


def test_missing_directories_are_created_by_the_first_write(tmp_path: Path) -> None:
    db = tmp_path / "var" / "cache" / "site" / "cache.db"
    c = Cache(f"sqlite://{db}")
    assert c.get("k") is None and not (tmp_path / "var").exists()  # opening and reading write nothing
    c.set("k", 1)
    assert c.get("k") == 1
    assert oct((tmp_path / "var" / "cache" / "site").stat().st_mode & 0o777) == oct(0o700)
    with pytest.raises(polycache.ConfigurationError, match="is not a directory"):
        Cache(f"sqlite://{db}/under/a/file.db")


def test_bounded_table_stays_bounded(db: Path) -> None:
    c = Cache(f"sqlite://{db}?max_entries=200", timeout=None)
    for i in range(2000):
        c.set(f"k{i}", i)
    [[n]] = raw_sql(db, "SELECT count(*) FROM polycache_cache")
    assert 180 <= n <= 220
    assert c.get("k1999") == 1999
    assert c.stats()["evictions"] >= 1780
    assert os.path.getsize(db) > 0


def test_create_table_creates_it_ahead_of_use(db: Path) -> None:
    url = f"sqlite://{db}?table=deploy_cache"
    polycache.create_table(url)
    tables = raw_sql(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert ["deploy_cache"] in tables
    polycache.create_table(url)  # idempotent, like createcachetable
    c = Cache(url)
    c.set("k", 1)
    assert c.get("k") == 1
    c.close()
    with pytest.raises(polycache.ConfigurationError, match="sqlite://"):
        polycache.create_table("memory://")
    with pytest.raises(polycache.ConfigurationError, match="table"):
        polycache.create_table(f"sqlite://{db}?table=a;b")
