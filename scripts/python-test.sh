#!/usr/bin/env bash
# Builds the wheel, installs it into .venv, and runs the Python test suite against the
# installed package (never the source tree), the stub check and the quick-start example.
# Run scripts/python-env.sh first. Needs no standard input.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POLYCACHE_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "python-test: $VENV is missing; run scripts/python-env.sh first" >&2
    exit 1
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Where the wheel goes, and which optional backends it is built with (cargo features).
DIST="${POLYCACHE_DIST:-$ROOT/dist}"
FEATURES="${POLYCACHE_FEATURES:-}"

cd "$ROOT"
rm -f "$DIST"/polycache-*.whl
"$VENV/bin/maturin" build --release -o "$DIST" --interpreter "$PY" ${FEATURES:+--features "$FEATURES"} </dev/null
"$PY" -m pip install --quiet --force-reinstall --no-deps "$DIST"/polycache-*.whl </dev/null
if [ "${1:-}" = "--build-only" ]; then
    exit 0
fi

# From a scratch directory, so that `import polycache` cannot find python/polycache.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

echo "python-test: pytest"
"$PY" -m pytest -W error -p no:cacheprovider --import-mode=importlib \
    --rootdir "$ROOT/tests/python" -c /dev/null "$ROOT/tests/python" </dev/null

echo "python-test: stubtest"
"$PY" -m mypy.stubtest polycache --allowlist "$ROOT/tests/python/stubtest-allowlist.txt" \
    --mypy-config-file "$ROOT/tests/python/mypy.ini" </dev/null

echo "python-test: mypy on the tests and examples"
"$PY" -m mypy --config-file "$ROOT/tests/python/mypy.ini" \
    "$ROOT/tests/python" "$ROOT/examples/python" </dev/null

echo "python-test: quick start"
"$PY" "$ROOT/examples/python/quickstart.py" </dev/null
