#!/usr/bin/env bash
# Creates .venv (if missing) and installs the pinned development dependencies of the Python
# package into it. Idempotent; needs only python3 with venv and pip, and no standard input.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POLYCACHE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "python-env: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install --quiet --upgrade pip </dev/null
"$VENV/bin/python" -m pip install --quiet -r "$ROOT/tests/python/requirements.txt" </dev/null
echo "python-env: ready ($("$VENV/bin/python" --version))"
