#!/usr/bin/env bash
# Checks that the source distribution installs on a machine with only Rust and Python:
# builds it with `maturin sdist`, checks what it holds, then `pip install`s it into a new
# empty virtual environment (pip builds it with cargo, as a user's `pip install` would) and
# imports it from a scratch directory. The build reuses CARGO_TARGET_DIR, so only the
# polycache crates are compiled again. Run scripts/python-env.sh first (for maturin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POLYCACHE_VENV:-$ROOT/.venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python3}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

cd "$ROOT"
"$VENV/bin/maturin" sdist --out "$WORK/dist" </dev/null
SDIST="$(ls "$WORK"/dist/polycache-*.tar.gz)"

# What a build from the sdist needs, and nothing of the tests or benchmarks.
listing="$WORK/listing.txt"
tar tzf "$SDIST" | sed 's|^[^/]*/||' >"$listing"
for need in Cargo.toml Cargo.lock pyproject.toml LICENSE-MIT LICENSE-APACHE docs/python.md \
    core/Cargo.toml core/src/lib.rs python/Cargo.toml python/src/lib.rs \
    python/polycache/__init__.py python/polycache/py.typed PKG-INFO; do
    grep -qx "$need" "$listing" || { echo "python-sdist-test: $need is missing from $SDIST" >&2; exit 1; }
done
if grep -E '^(tests|bench|fuzz|target|\.venv)/' "$listing"; then
    echo "python-sdist-test: $SDIST holds files it should not (above)" >&2
    exit 1
fi
echo "python-sdist-test: $(basename "$SDIST"): $(wc -l <"$listing") files, $(du -k "$SDIST" | cut -f1) KiB"

# A new, empty environment: only what pip itself brings.
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet "$SDIST" </dev/null
cd "$WORK"
"$WORK/venv/bin/python" - <<'PY'
import polycache

cache = polycache.Cache("memory://?max_entries=100", key_prefix="sdist")
cache.set("greeting", "hello")
cache.set("n", 41, timeout=None)
assert cache.get("greeting") == "hello"
assert cache.incr("n") == 42
assert polycache.__file__.startswith(__import__("sysconfig").get_paths()["purelib"])
print("python-sdist-test: installed from the sdist;", ", ".join(polycache.SCHEMES))
PY
echo "python-sdist-test: passed in $((SECONDS - start)) s"
