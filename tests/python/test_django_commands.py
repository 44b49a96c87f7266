"""``manage.py createcachetable`` with ``"polycache"`` in ``INSTALLED_APPS``: the tables of
polycache's SQL caches, and ``--dry-run`` touching nothing. Each run is a fresh process, as
``manage.py`` is (Django's settings and command registry are per process)."""

from __future__ import annotations

import json
import pathlib
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

import polycache

pytestmark = pytest.mark.skipif(
    "sqlite://" not in polycache.SCHEMES, reason="this wheel is built without the sqlite backend"
)

SCRIPT = """
import json, sys
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["polycache"], CACHES=json.loads(sys.argv[1]))
django.setup()
from django.core.management import call_command
call_command("createcachetable", *sys.argv[2:])
"""


def createcachetable(caches: dict[str, Any], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(caches), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def tables(path: pathlib.Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def test_createcachetable_creates_polycache_sql_tables(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "var" / "cache" / "site" / "cache.db"
    caches = {
        "default": {"BACKEND": "polycache.django.Cache", "LOCATION": f"sqlite://{db}"},
        "culled": {
            "BACKEND": "polycache.django.Cache",
            "LOCATION": f"sqlite://{db}?table=culled",
            "OPTIONS": {"MAX_ENTRIES": 100},
        },
        "local": {"BACKEND": "polycache.django.Cache", "LOCATION": "memory://"},
        "shared": {
            "BACKEND": "polycache.django.Cache",
            "LOCATION": "postgres://app:s3cret@127.0.0.1:1/site?table=pg_cache",
        },
    }
    dry = createcachetable(caches, "--dry-run")
    assert 'CREATE TABLE IF NOT EXISTS "polycache_cache"' in dry
    assert 'CREATE TABLE IF NOT EXISTS "culled"' in dry and '"culled_count"' in dry
    assert 'CREATE TABLE IF NOT EXISTS "pg_cache"' in dry  # printed without connecting
    assert "s3cret" not in dry
    assert not (tmp_path / "var").exists(), "--dry-run created the database"

    del caches["shared"]  # no server at 127.0.0.1:1 to create it in
    out = createcachetable(caches)
    assert "'default'" in out and "'culled'" in out
    assert tables(db) == ["culled", "culled_count", "polycache_cache"]
    createcachetable(caches)  # idempotent
    assert tables(db) == ["culled", "culled_count", "polycache_cache"]
