#!/usr/bin/env bash
# Builds the wheel for every further CPython this machine has (3.9 to 3.14, besides the one of
# .venv, which scripts/python-test.sh covers) and runs the core Python suite and the Flask
# suite against it; then a memory://-only wheel on the first of them. Needs no standard input.
#
# Interpreters are found through pyenv (`pyenv root`/versions/3.X.*) when pyenv is installed,
# else as `python3.X` on PATH. A missing one is reported and skipped, by name; with
# POLYCACHE_REQUIRE_PYTHONS=1 (CI) a missing one fails the run instead. The wheels are built
# with cargo's dev profile, not release+LTO: it reuses what `cargo test` (make test-rust)
# compiled, and only pyo3 and the binding are compiled again per interpreter. Each
# interpreter gets its own virtual environment under .venv-versions/ with
# tests/python/requirements-versions.txt.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAIN_VENV="${POLYCACHE_VENV:-$ROOT/.venv}"
VENVS="${POLYCACHE_VERSION_VENVS:-$ROOT/.venv-versions}"
DIST="${POLYCACHE_DIST:-$ROOT/dist}/versions"
REQUIREMENTS="$ROOT/tests/python/requirements-versions.txt"
VERSIONS="${POLYCACHE_PYTHONS:-3.9 3.10 3.11 3.12 3.13 3.14}"

if [ ! -x "$MAIN_VENV/bin/maturin" ]; then
    echo "python-versions: $MAIN_VENV has no maturin; run scripts/python-env.sh first" >&2
    exit 1
fi
main_version="$("$MAIN_VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# The interpreter of CPython $1 (e.g. 3.12), or nothing.
find_python() {
    local v="$1" candidate
    if command -v pyenv >/dev/null 2>&1; then
        for candidate in $(ls -d "$(pyenv root)/versions/$v".* 2>/dev/null | sort -V -r); do
            if [ -x "$candidate/bin/python$v" ]; then
                echo "$candidate/bin/python$v"
                return
            fi
        done
    fi
    candidate="$(command -v "python$v" 2>/dev/null || true)"
    if [ -n "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
        echo "$candidate"
    fi
}

# The core suite (no framework needed) and one framework suite.
TESTS=(test_cache.py test_async.py test_caches.py test_exceptions.py test_bad_input.py test_refresh.py test_flask.py)

tested=() skipped=()
for v in $VERSIONS; do
    [ "$v" = "$main_version" ] && continue
    py="$(find_python "$v")"
    if [ -z "$py" ]; then
        echo "python-versions: SKIP CPython $v: no python$v found (pyenv versions or PATH)"
        skipped+=("$v")
        continue
    fi
    echo "python-versions: CPython $v ($py)"
    venv="$VENVS/$v"
    PYTHON="$py" POLYCACHE_VENV="$venv" POLYCACHE_REQUIREMENTS="$REQUIREMENTS" bash "$ROOT/scripts/python-env.sh"
    rm -rf "$DIST/$v"
    (cd "$ROOT" && "$MAIN_VENV/bin/maturin" build --profile dev -o "$DIST/$v" --interpreter "$venv/bin/python" </dev/null)
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps \
        "$DIST/$v"/polycache-*.whl </dev/null
    work="$(mktemp -d)"
    (cd "$work" && "$venv/bin/python" -m pytest -q -W error -p no:cacheprovider --import-mode=importlib \
        --rootdir "$ROOT/tests/python" -c /dev/null "${TESTS[@]/#/$ROOT/tests/python/}" </dev/null) ||
        { rm -rf "$work"; echo "python-versions: CPython $v FAILED" >&2; exit 1; }
    rm -rf "$work"
    tested+=("$v")
done

# A wheel with memory:// alone (`--no-default-features --features memory`) on the first of
# these interpreters: it must build, pass the core suite (the tests of other backends skip,
# saying why) and list only its own schemes in polycache.SCHEMES.
if [ "${#tested[@]}" -gt 0 ]; then
    v="${tested[0]}"
    venv="$VENVS/$v"
    echo "python-versions: CPython $v, a memory://-only wheel"
    rm -rf "$DIST/$v-memory"
    (cd "$ROOT" && "$MAIN_VENV/bin/maturin" build --profile dev --no-default-features --features memory \
        -o "$DIST/$v-memory" --interpreter "$venv/bin/python" </dev/null)
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps \
        "$DIST/$v-memory"/polycache-*.whl </dev/null
    work="$(mktemp -d)"
    (cd "$work" && POLYCACHE_EXPECT_SCHEMES="dummy://,memory://,tiered://" "$venv/bin/python" -m pytest -q \
        -W error -p no:cacheprovider --import-mode=importlib --rootdir "$ROOT/tests/python" -c /dev/null \
        "${TESTS[@]/#/$ROOT/tests/python/}" </dev/null) ||
        { rm -rf "$work"; echo "python-versions: the memory://-only wheel FAILED" >&2; exit 1; }
    rm -rf "$work"
fi

echo "python-versions: tested CPython ${tested[*]:-none} (and $main_version in scripts/python-test.sh)${skipped:+; skipped ${skipped[*]}: not installed}"
if [ "${#skipped[@]}" -gt 0 ] && [ "${POLYCACHE_REQUIRE_PYTHONS:-0}" = "1" ]; then
    echo "python-versions: POLYCACHE_REQUIRE_PYTHONS=1 and CPython ${skipped[*]} missing" >&2
    exit 1
fi
