"""Runs Django's own cache test suite against ``polycache.django.Cache``.

    python tests/python/django_suite/run_suite.py                  # every scheme this build has
    python tests/python/django_suite/run_suite.py memory:// redis://127.0.0.1:6379/0

It downloads the source distribution of the installed Django (``pip download --no-binary
:all: --no-deps django==X.Y.Z``) into ``target/django-suite/`` once, extracts its
``tests/cache/`` package there (nothing of it is committed), and runs ``polycache_suite``
(Django's test classes pointed at polycache) once per location, each in a fresh process:
Django's settings are process-wide. Up to ``--jobs`` locations (8) run at once, and each
one's output is printed whole when all are done, in order. Without arguments the locations
are every scheme in ``polycache.SCHEMES`` among memory, dummy, file, sqlite, redis,
memcached and postgres, with the servers started on free loopback ports
(``tests/python/servers.py``) and temporary directories for the file and SQLite stores.
Exits non-zero when any run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from typing import IO

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
CACHE_DIR = os.path.join(ROOT, "target", "django-suite")
# Locations run at once: a run spends most of its time in the suite's sleeps (expiry tests),
# so running them side by side takes the time of the longest, not of all of them in turn.
JOBS = 8


def django_tests_dir() -> str:
    """The extracted ``tests`` directory of the installed Django's sdist (only ``tests/cache``)."""
    import django

    version = django.__version__
    base = os.path.join(CACHE_DIR, f"django-{version}")
    tests = os.path.join(base, "tests")
    if os.path.exists(os.path.join(tests, "cache", "tests.py")):
        return tests
    os.makedirs(CACHE_DIR, exist_ok=True)
    sdist = os.path.join(CACHE_DIR, f"django-{version}.tar.gz")
    if not os.path.exists(sdist):
        print(f"django-suite: downloading the Django {version} sdist", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
             f"django=={version}", "-d", CACHE_DIR],
            check=True, stdin=subprocess.DEVNULL,
        )
    prefix = f"django-{version}/tests/cache/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        if not any(m.name == prefix + "tests.py" for m in members):
            raise SystemExit(f"django-suite: {sdist} has no {prefix}tests.py")
        tar.extractall(CACHE_DIR, members=members, filter="data")
    return tests


@contextlib.contextmanager
def default_locations() -> Iterator[list[str]]:
    """A location per scheme this build has, with servers and directories to match."""
    import polycache

    sys.path.insert(0, os.path.dirname(HERE))
    import servers

    schemes = set(polycache.SCHEMES)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="polycache-django-suite-"))
        locations = ["memory://", "dummy://"]
        if "file://" in schemes:
            locations.append(f"file://{work}/file-cache")
        if "sqlite://" in schemes:
            locations.append(f"sqlite://{work}/cache.db")
        if "redis://" in schemes:
            locations.append(stack.enter_context(servers.redis_server()).url)
        if "memcached://" in schemes:
            locations.append(stack.enter_context(servers.memcached_server()).url)
        if "postgres://" in schemes:
            locations.append(stack.enter_context(servers.postgres_server()).url)
        yield locations


def run_child(location: str) -> int:
    """Runs the suite for one location in this process."""
    import warnings

    # As Django's runtests.py: a CacheKeyWarning (a RuntimeWarning) outside assertWarns fails.
    warnings.simplefilter("error", RuntimeWarning)
    warnings.simplefilter("error", ResourceWarning)
    sys.path[:0] = [HERE, django_tests_dir()]
    os.environ["POLYCACHE_SUITE_LOCATION"] = location
    os.environ["DJANGO_SETTINGS_MODULE"] = "suite_settings"
    import django
    from django.test.runner import DiscoverRunner

    django.setup()
    runner = DiscoverRunner(verbosity=int(os.environ.get("POLYCACHE_SUITE_VERBOSITY", "1")), interactive=False)
    failures = runner.run_tests(["polycache_suite"])
    import polycache_suite

    for owner, entries in sorted(polycache_suite.RELAXATIONS.items()):
        for name, reason in sorted(entries.items()):
            print(f"  relaxation {owner}.{name}: {reason}")
    return 1 if failures else 0


def start_child(location: str, cwd: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Starts the suite for one location in a fresh process (Django's settings are
    process-wide), from a scratch directory so that `import polycache` is the installed wheel."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", location],
                            cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("locations", nargs="*", help="cache URLs (default: one per scheme of this build)")
    parser.add_argument("--jobs", type=int, default=JOBS, help=f"locations run at once (default {JOBS})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args.child)
    django_tests_dir()  # download once, before the runs
    results: list[tuple[str, int, float]] = []
    with contextlib.ExitStack() as stack:
        locations = args.locations or stack.enter_context(default_locations())
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="polycache-django-suite-run-"))
        pending = list(enumerate(locations))
        running: dict[int, tuple[str, subprocess.Popen[bytes], IO[bytes], float]] = {}
        finished: dict[int, tuple[str, int, float, bytes]] = {}
        while pending or running:
            while pending and len(running) < max(args.jobs, 1):
                index, location = pending.pop(0)
                cwd = os.path.join(work, str(index))
                os.mkdir(cwd)
                output: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
                running[index] = (location, start_child(location, cwd, output), output, time.monotonic())
            time.sleep(0.1)
            for index, (location, child, log, started) in list(running.items()):
                code = child.poll()
                if code is None:
                    continue
                log.seek(0)
                finished[index] = (location, code, time.monotonic() - started, log.read())
                del running[index]
        # Each location's output whole, in the order of the locations.
        for index in sorted(finished):
            location, code, seconds, printed = finished[index]
            print(f"\ndjango-suite: {location}", flush=True)
            sys.stdout.buffer.write(printed)
            sys.stdout.flush()
            results.append((location, code, seconds))
    print("\ndjango-suite: summary")
    for location, code, seconds in results:
        print(f"  {'ok    ' if code == 0 else 'FAILED'} {location} ({seconds:.0f} s)")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
