"""polycache's file:// cache against the disk caches a Python user would pick instead.

Times get (hit and miss) and set of a 16-byte str and of a small dict on
`polycache.Cache("file:///dir")`, `diskcache.Cache`, Django's `FileBasedCache` and Django's
`DatabaseCache` on SQLite, in one run, as µs per call (best of 5 timeit loops), with the
ratio polycache / peer. Every cache holds 10,000 entries first (Django's file cache lists its
whole directory on every set, so its cost grows with that number); gets and sets cycle
through 1,000 of those keys, misses through 1,000 absent ones. Then measures bytes on disk
per small entry (10,000 entries of a 16-byte str, `du` of the directory divided by the
entries) for each library.

The caches live in a fresh temporary directory on the file system of $TMPDIR (or /tmp);
pass --dir DIR to use another one. No server is needed.

Run: .venv/bin/python bench/python/bench_file.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import sys
import tempfile
import timeit
from collections.abc import Callable
from typing import Any

STR_VALUE = "abcdefghijklmnop"  # 16 bytes
DICT_VALUE = {"id": 42, "name": "widget", "tags": ["a", "b"], "price": 9.99}
PRESENT = 10_000
CYCLE = 1_000
REPEAT = 5
KEYS = [f"key-{i:05d}" for i in range(PRESENT)]
MISSING = [f"absent-{i:05d}" for i in range(CYCLE)]


DJANGO_DB_DIR = "django-db"
DJANGO_TABLES = {"speed-django-db": "bench_speed", "disk-django-db": "bench_disk"}


def configure_django(base: str) -> None:
    """Django settings for both peers: a SQLite database (in `base`) for the DatabaseCache."""
    from django.conf import settings

    if settings.configured:
        return
    os.makedirs(os.path.join(base, DJANGO_DB_DIR))
    caches = {
        table: {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": table,
            "TIMEOUT": None,
            "OPTIONS": {"MAX_ENTRIES": 10 * PRESENT},
        }
        for table in DJANGO_TABLES.values()
    }
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(base, DJANGO_DB_DIR, "django.db"),
            }
        },
        CACHES={"default": caches["bench_speed"], **caches},
        USE_TZ=True,
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("createcachetable", database="default", verbosity=0)


def make_polycache(path: str) -> Any:
    import polycache

    return polycache.Cache(f"file://{path}", timeout=None)


def make_diskcache(path: str) -> Any:
    import diskcache  # type: ignore[import-untyped]

    return diskcache.Cache(path)


def make_django(path: str) -> Any:
    from django.core.cache.backends.filebased import FileBasedCache

    return FileBasedCache(path, {"TIMEOUT": None, "OPTIONS": {"MAX_ENTRIES": 10 * PRESENT}})


def make_django_db(path: str) -> Any:
    """Django's DatabaseCache on the SQLite database; `path` names its table."""
    from django.core.cache import caches

    return caches[DJANGO_TABLES[os.path.basename(path)]]


def fill(lib: str, cache: Any, n: int) -> None:
    if lib == "django file":
        # Django culls (lists the directory) on every set: bypass it while filling only.
        cull = cache._cull
        cache._cull = lambda: None
        try:
            for k in KEYS[:n]:
                cache.set(k, STR_VALUE)
        finally:
            cache._cull = cull
    elif lib == "django db":
        # One transaction for the whole fill (each set alone commits and syncs the journal).
        from django.db import transaction

        with transaction.atomic():
            for k in KEYS[:n]:
                cache.set(k, STR_VALUE)
    else:
        for k in KEYS[:n]:
            cache.set(k, STR_VALUE)


def close(lib: str, cache: Any) -> None:
    if lib == "diskcache":
        cache.close()


LIBRARIES: dict[str, Callable[[str], Any]] = {
    "polycache": make_polycache,
    "diskcache": make_diskcache,
    "django file": make_django,
    "django db": make_django_db,
}
OPS = ["get hit str", "get hit dict", "get miss", "set str", "set dict"]

# Each op is a timeit statement with its own namespace, calling a pre-bound method.
Op = tuple[str, dict[str, Any]]


def ops_for(cache: Any) -> dict[str, Op]:
    str_keys = KEYS[:CYCLE]
    dict_keys = KEYS[CYCLE : 2 * CYCLE]
    for k in dict_keys:
        cache.set(k, DICT_VALUE)
    for k in (str_keys[0], dict_keys[0]):
        assert cache.get(k) is not None, k
    return {
        "get hit str": ("get(next(ks))", {"get": cache.get, "ks": itertools.cycle(str_keys)}),
        "get hit dict": ("get(next(ks))", {"get": cache.get, "ks": itertools.cycle(dict_keys)}),
        "get miss": ("get(next(ks))", {"get": cache.get, "ks": itertools.cycle(MISSING)}),
        "set str": ("set_(next(ks), v)", {"set_": cache.set, "ks": itertools.cycle(str_keys), "v": STR_VALUE}),
        "set dict": ("set_(next(ks), v)", {"set_": cache.set, "ks": itertools.cycle(dict_keys), "v": DICT_VALUE}),
    }


def time_op(op: Op, number: int) -> float:
    """Best-of-REPEAT µs per execution of the op's statement."""
    stmt, namespace = op
    timer = timeit.Timer(stmt, globals=namespace)
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e6


def calls_for(lib: str, op: str, quick: bool) -> int:
    n = 20_000 if op.startswith("get") else 5_000
    if lib == "django file" and op.startswith("set"):
        n = 40  # about 10 ms a call with 10,000 entries present
    elif lib == "django db" and op.startswith("set"):
        n = 500  # a COUNT(*) and a transaction per set
    return max(n // 10, 10) if quick else n


def run_speed(base: str, quick: bool) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for lib, make in LIBRARIES.items():
        path = os.path.join(base, f"speed-{lib.replace(' ', '-')}")
        cache = make(path)
        fill(lib, cache, PRESENT)
        ops = ops_for(cache)
        results[lib] = {op: time_op(ops[op], calls_for(lib, op, quick)) for op in OPS}
        close(lib, cache)
        del cache, ops
        gc.collect()
        if lib != "django db":
            shutil.rmtree(path, ignore_errors=True)

    peers = [lib for lib in LIBRARIES if lib != "polycache"]
    print(f"Python {sys.version.split()[0]}; µs per call, best of {REPEAT} timeit loops; "
          f"{PRESENT:,} entries present, keys cycling over {CYCLE:,}")
    print()
    header = f"{'op':14s}" + "".join(f"{lib:>14s}" for lib in LIBRARIES)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:14s}" + "".join(f"{results[lib][op]:14.2f}" for lib in LIBRARIES))
    print()
    print("polycache / peer (< 1: polycache is faster)")
    header = f"{'op':14s}" + "".join(f"{lib:>14s}" for lib in peers)
    print(header)
    print("-" * len(header))
    for op in OPS:
        print(f"{op:14s}" + "".join(f"{results['polycache'][op] / results[lib][op]:14.3f}" for lib in peers))
    return results


def du_bytes(path: str) -> int:
    """What `du` counts: allocated blocks of every file and directory under path."""
    total = os.lstat(path).st_blocks * 512
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def drop_django_speed_table() -> None:
    """Empties the Django database of the speed run, so `du` sees the disk run's table only."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {DJANGO_TABLES['speed-django-db']}")
        cursor.execute("VACUUM")


def run_disk(base: str) -> dict[str, float]:
    print()
    print(f"bytes on disk per small entry: {PRESENT:,} entries of a 16-byte str, du of the directory")
    print(f"{'library':14s}{'du total':>14s}{'per entry':>12s}")
    per: dict[str, float] = {}
    for lib, make in LIBRARIES.items():
        path = os.path.join(base, f"disk-{lib.replace(' ', '-')}")
        if lib == "django db":
            drop_django_speed_table()
        cache = make(path)
        fill(lib, cache, PRESENT)
        close(lib, cache)
        del cache
        gc.collect()
        total = du_bytes(os.path.join(base, DJANGO_DB_DIR) if lib == "django db" else path)
        per[lib] = total / PRESENT
        print(f"{lib:14s}{total:14,d}{per[lib]:12.0f}")
        shutil.rmtree(path, ignore_errors=True)
    return per


def main() -> None:
    import polycache

    if "file://" not in polycache.SCHEMES:
        print("bench_file: skipped, the installed polycache was built without the file feature "
              "(build it with POLYCACHE_FEATURES=file)")
        return
    quick = "--quick" in sys.argv
    parent = None
    if "--dir" in sys.argv:
        parent = sys.argv[sys.argv.index("--dir") + 1]
    base = tempfile.mkdtemp(prefix="polycache-bench-file-", dir=parent)
    configure_django(base)
    try:
        speed = run_speed(base, quick)
        disk = run_disk(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    print("targets (issue 5):")
    poly, dc, dj, db = speed["polycache"], speed["diskcache"], speed["django file"], speed["django db"]
    for op in ("get hit str", "get hit dict"):
        print(f"  {op}: {poly[op] / dc[op]:.2f}x diskcache (target <= 0.5)")
    for op in ("set str", "set dict"):
        print(f"  {op}: {poly[op] / dc[op]:.2f}x diskcache (target <= 0.3), "
              f"{dj[op] / poly[op]:,.0f}x faster than django file and "
              f"{db[op] / poly[op]:,.0f}x faster than django db (target >= 100)")
    print(f"  bytes per small entry: {disk['polycache']:.0f} vs diskcache {disk['diskcache']:.0f} "
          f"(target: below diskcache)")


if __name__ == "__main__":
    main()
