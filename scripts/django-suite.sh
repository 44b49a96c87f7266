#!/usr/bin/env bash
# Runs Django's own cache test suite (tests/cache of the installed Django's sdist, downloaded
# into target/django-suite/ on first use, never committed) against polycache.django.Cache,
# once per scheme of the installed wheel (memory, dummy, file, sqlite, redis, memcached,
# postgres, as built), each against servers and directories the run starts itself.
# Needs the wheel installed (scripts/python-test.sh does it) and no standard input.
#   bash scripts/django-suite.sh                   # every scheme of the build
#   bash scripts/django-suite.sh memory:// dummy://
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POLYCACHE_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "django-suite: $VENV is missing; run scripts/python-env.sh first" >&2
    exit 1
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$(mktemp -d)"
exec "$PY" "$ROOT/tests/python/django_suite/run_suite.py" "$@" </dev/null
