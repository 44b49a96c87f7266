"""polycache's sqlite:// and postgres:// caches against the SQL caches a Python user would pick.

SQLite: `polycache.Cache("sqlite:///…")` against `diskcache.Cache` (itself a SQLite table)
and Django's `DatabaseCache` on a SQLite database (configured in-process, table made by
`createcachetable`). PostgreSQL: `polycache.Cache("postgres://…")` against Django's
`DatabaseCache` on the same private server (psycopg 3), started by tests/python/servers.py.

Times get (hit) and set of a 16-byte str and of a small dict, in one run, as µs per call
(best of 5 timeit loops), with the ratio polycache / peer. Every cache holds 10,000 entries
first; gets and sets cycle through 1,000 of those keys. Django's DatabaseCache runs a
`COUNT(*)` on every set (its cull check), so its set cost grows with the table.

The SQLite files live in a fresh temporary directory of $TMPDIR (or /tmp); pass --dir DIR to
use another one. Without PostgreSQL installed the PostgreSQL part is skipped.

Run: .venv/bin/python bench/python/bench_sql.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import timeit
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))
import servers  # noqa: E402

STR_VALUE = "abcdefghijklmnop"  # 16 bytes
DICT_VALUE = {"id": 42, "name": "widget", "tags": ["a", "b"], "price": 9.99}
PRESENT = 10_000
CYCLE = 1_000
REPEAT = 5
KEYS = [f"key-{i:05d}" for i in range(PRESENT)]
DJANGO_SQLITE_TABLE = "django_cache_sqlite"
DJANGO_PG_TABLE = "django_cache_pg"
OPS = ["get hit (str)", "get hit (dict)", "set (str)", "set (dict)"]


class CacheRouter:
    """Sends the PostgreSQL cache table's queries (and its creation) to the `pg` database."""

    @staticmethod
    def _db(model: Any) -> str | None:
        table = getattr(model._meta, "db_table", "")
        if table == DJANGO_PG_TABLE:
            return "pg"
        if table == DJANGO_SQLITE_TABLE:
            return "default"
        return None

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._db(model)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._db(model)

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        model = hints.get("model")
        wanted = self._db(model) if model is not None else None
        return None if wanted is None else db == wanted


def configure_django(workdir: str, pg_port: int | None) -> None:
    """One settings object for both DatabaseCaches: SQLite as `default`, PostgreSQL as `pg`."""
    from django.conf import settings

    databases: dict[str, Any] = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(workdir, "django.db")},
    }
    caches: dict[str, Any] = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": DJANGO_SQLITE_TABLE,
            "TIMEOUT": None,
            "OPTIONS": {"MAX_ENTRIES": 10 * PRESENT},
        },
    }
    if pg_port is not None:
        databases["pg"] = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": str(pg_port),
        }
        caches["pg"] = {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": DJANGO_PG_TABLE,
            "TIMEOUT": None,
            "OPTIONS": {"MAX_ENTRIES": 10 * PRESENT},
        }
    settings.configure(DATABASES=databases, CACHES=caches, DATABASE_ROUTERS=[CacheRouter()], USE_TZ=True)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("createcachetable", database="default", verbosity=0)
    if pg_port is not None:
        call_command("createcachetable", database="pg", verbosity=0)


def django_cache(alias: str) -> Any:
    from django.core.cache import caches

    return caches[alias]


def fill(cache: Any) -> None:
    for k in KEYS:
        cache.set(k, STR_VALUE)


def time_calls(fn: Callable[[], object], number: int) -> float:
    """Best-of-REPEAT µs per call."""
    return min(timeit.repeat(fn, number=number, repeat=REPEAT)) / number * 1e6


def bench(cache: Any, number: int, set_number: int) -> dict[str, float]:
    fill(cache)
    for i in range(CYCLE):
        cache.set(f"dict-{i:04d}", DICT_VALUE)
    str_keys = itertools.cycle(KEYS[:CYCLE])
    dict_keys = itertools.cycle([f"dict-{i:04d}" for i in range(CYCLE)])
    get, set_ = cache.get, cache.set
    assert get(KEYS[0]) == STR_VALUE and get("dict-0000") == DICT_VALUE
    return {
        "get hit (str)": time_calls(lambda: get(next(str_keys)), number),
        "get hit (dict)": time_calls(lambda: get(next(dict_keys)), number),
        "set (str)": time_calls(lambda: set_(next(str_keys), STR_VALUE), set_number),
        "set (dict)": time_calls(lambda: set_(next(dict_keys), DICT_VALUE), set_number),
    }


def print_table(title: str, results: dict[str, dict[str, float]]) -> None:
    libs = list(results)
    peers = libs[1:]
    print(title)
    header = f"{'op (µs/call)':16s}" + "".join(f"{lib:>22s}" for lib in libs)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:16s}" + "".join(f"{results[lib][op]:22.2f}" for lib in libs))
    print()
    print("polycache / peer (< 1: polycache is faster)")
    header = f"{'op':16s}" + "".join(f"{lib:>22s}" for lib in peers)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:16s}" + "".join(f"{results[libs[0]][op] / results[lib][op]:22.4f}" for lib in peers))
    print()


@contextlib.contextmanager
def maybe_postgres() -> Iterator[servers.Server | None]:
    try:
        with servers.postgres_server() as s:
            yield s
    except RuntimeError as e:
        if "not installed" not in str(e):
            raise
        print(f"PostgreSQL part skipped: {e}\n")
        yield None


def main() -> None:
    quick = "--quick" in sys.argv
    base = sys.argv[sys.argv.index("--dir") + 1] if "--dir" in sys.argv else None
    workdir = tempfile.mkdtemp(prefix="polycache-bench-sql-", dir=base)
    number, set_number, slow_number = (200, 200, 20) if quick else (5_000, 2_000, 100)
    import diskcache  # type: ignore[import-untyped]

    import polycache

    print(f"Python {sys.version.split()[0]}; µs per call, best of {REPEAT} timeit loops; {PRESENT:,} entries present")
    print(f"files under {workdir}")
    print()
    try:
        with maybe_postgres() as pg:
            configure_django(workdir, pg.port if pg else None)

            sqlite: dict[str, dict[str, float]] = {}
            poly = polycache.Cache(f"sqlite://{workdir}/polycache.db", timeout=None)
            sqlite["polycache sqlite://"] = bench(poly, number, set_number)
            poly.close()
            dc = diskcache.Cache(os.path.join(workdir, "diskcache"))
            sqlite["diskcache"] = bench(dc, number, set_number)
            dc.close()
            sqlite["django DatabaseCache"] = bench(django_cache("default"), number // 5, slow_number)
            print_table("SQLite", sqlite)
            poly_sqlite = sqlite["polycache sqlite://"]
            print("targets: get hit <= 1.0x diskcache, set <= 0.5x diskcache, set <= 0.01x Django")
            for op in OPS:
                vs_dc = poly_sqlite[op] / sqlite["diskcache"][op]
                line = f"  {op:16s} vs diskcache {vs_dc:.2f}"
                if op.startswith("set"):
                    line += f", vs Django {poly_sqlite[op] / sqlite['django DatabaseCache'][op]:.4f}"
                print(line)
            print()

            if pg is not None:
                postgres: dict[str, dict[str, float]] = {}
                poly = polycache.Cache(f"{pg.url}?table=polycache_bench", timeout=None)
                postgres["polycache postgres://"] = bench(poly, number // 5, set_number // 2)
                poly.close()
                postgres["django DatabaseCache"] = bench(django_cache("pg"), number // 5, slow_number * 5)
                print_table("PostgreSQL (loopback TCP, fsync=off)", postgres)
                from django.db import connections

                connections.close_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
