"""``polycache.giotto.KeyValue``: Giotto's key-value interface (``giotto/keyvalue.py``).

Giotto does not import on current Python, so the tests use the interface as Giotto defines
it: ``get(key)`` (None on a miss) and ``set(key, obj, expire)``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import polycache
from polycache.giotto import SHORTCUTS, KeyValue, resolve


def test_shortcuts_map_to_local_default_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve("redis") == "redis://127.0.0.1:6379/0"
    assert resolve("memcache") == "memcached://127.0.0.1:11211"
    assert resolve("database") == f"sqlite://{tmp_path}/giotto-cache.sqlite3"
    assert resolve("locmem") == "memory://giotto"
    assert resolve("dummy") == "dummy://"
    assert resolve("memory://other") == "memory://other"
    assert set(SHORTCUTS) == {"redis", "memcache", "database", "locmem", "dummy"}
    with pytest.raises(polycache.ConfigurationError, match="'memcached'.*redis, memcache, database, locmem, dummy"):
        resolve("memcached")
    with pytest.raises(polycache.ConfigurationError) as err:
        resolve("redis:/u:s3cret@host")
    assert "s3cret" not in str(err.value)


def test_get_set_and_expire_words() -> None:
    kv = KeyValue("memory://")
    assert kv.get("absent") is None
    kv.set("short", {"a": 1}, 1)
    kv.set("never", "n", 0)
    kv.set("none", "n", None)
    kv.set("negative", "x", -1)
    assert kv.get("short") == {"a": 1}
    assert kv.get("negative") is None
    time.sleep(1.3)
    assert [kv.get(k) for k in ("short", "never", "none")] == [None, "n", "n"]


def test_locmem_is_one_store_per_process_like_giottos() -> None:
    KeyValue("locmem").set("shared-key", 1, 0)
    assert KeyValue("locmem").get("shared-key") == 1


def test_dummy_never_hits() -> None:
    kv = KeyValue("dummy")
    kv.set("k", 1, 0)
    assert kv.get("k") is None


def test_non_str_keys_are_made_text_as_giottos_memcache_engine() -> None:
    kv = KeyValue("memory://")
    kv.set(42, "x", 0)
    assert kv.get("42") == "x" and kv.get(42) == "x"


def test_database_shortcut_is_a_sqlite_file_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "sqlite://" not in polycache.SCHEMES:
        pytest.skip("this wheel was built without the sqlite backend (cargo feature 'sqlite')")
    monkeypatch.chdir(tmp_path)
    kv = KeyValue("database")
    kv.set("k", [1, 2], 0)
    assert kv.get("k") == [1, 2]
    assert os.path.exists(tmp_path / "giotto-cache.sqlite3")
