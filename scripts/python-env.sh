#!/usr/bin/env bash
# Creates .venv and installs the pinned development dependencies of the Python package into
# it. Idempotent; needs only python3 with venv and pip, and no standard input. PYTHON,
# POLYCACHE_VENV and POLYCACHE_REQUIREMENTS choose another interpreter, directory and
# requirements file (scripts/python-versions.sh makes one environment per CPython so).
#
# The environment is kept clean: it holds exactly tests/python/requirements.txt (and the
# polycache wheel that scripts/python-test.sh installs). A stamp records the requirements,
# the interpreter and what was installed; when any of them differs (the requirements
# changed, or a package was installed by hand), the environment is built anew. An unchanged
# environment is reused as it is, without asking the package index.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POLYCACHE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS="${POLYCACHE_REQUIREMENTS:-$ROOT/tests/python/requirements.txt}"
STAMP="$VENV/.polycache-env"
export PIP_DISABLE_PIP_VERSION_CHECK=1

want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
installed() {
    "$VENV/bin/python" -m pip freeze --exclude polycache </dev/null | sha256sum | cut -d' ' -f1
}

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] &&
    [ "$(sed -n 1p "$STAMP")" = "$want" ] && [ "$(sed -n 2p "$STAMP")" = "$(installed)" ]; then
    echo "python-env: ready, unchanged ($("$VENV/bin/python" --version))"
    exit 0
fi

if [ -e "$VENV" ]; then
    echo "python-env: $VENV differs from $REQUIREMENTS; creating it anew"
    rm -rf "$VENV"
fi
echo "python-env: creating $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip </dev/null
"$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS" </dev/null
printf '%s\n%s\n' "$want" "$(installed)" >"$STAMP"
echo "python-env: ready ($("$VENV/bin/python" --version))"
