#!/usr/bin/env bash
# Create .venv (or $DEPLOYGATE_VENV) and install deploygate with its pinned dev dependencies.
# torch is pinned to the CPU build 2.13.0 (requirements-dev.txt): an unpinned torch pulls CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DEPLOYGATE_VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e . --config-settings editable_mode=compat
echo "deploygate installed in $VENV"
