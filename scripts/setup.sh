#!/usr/bin/env bash
# Create .venv (or $DEPLOYGATE_VENV) and install deploygate with its pinned dev dependencies, one step
# at a time: a line per step with its time, and pip's own output for the long one (about 2.2 GB;
# see the README for how long it takes). DEPLOYGATE_SETUP_QUIET=1 keeps only the step lines.
# torch is pinned to the CPU build 2.13.0 (requirements-dev.txt): an unpinned torch pulls CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DEPLOYGATE_VENV:-.venv}
PYTHON=${PYTHON:-python3}
START=$(date +%s)
QUIET=()
if [[ ${DEPLOYGATE_SETUP_QUIET:-0} == 1 ]]; then QUIET=(-q); fi
step() { # <n> <what> <command...>: one line before, one after with the time it took
  local n=$1 what=$2 t
  shift 2
  t=$(date +%s)
  echo "setup: [$n/4] $what"
  "$@"
  echo "setup: [$n/4] done in $(( $(date +%s) - t )) s"
}
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

if [[ -x $VENV/bin/python ]]; then
  echo "setup: [1/4] $VENV exists: reusing it"
else
  step 1 "creating the virtual environment $VENV" "$PYTHON" -m venv "$VENV"
fi
step 2 "upgrading pip" pip install -q --upgrade pip
step 3 "installing the pinned dependencies (requirements-dev.txt: torch 2.13.0 CPU, MLflow, transformers, peft, the test and lint tools)" \
  pip install "${QUIET[@]}" -r requirements-dev.txt
# Editable, in setuptools' default mode; its "Editable installation" notice is information only.
step 4 "installing deploygate itself (editable: the code in this folder)" \
  env PYTHONWARNINGS=ignore::UserWarning "$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-deps -e .
packages=$(pip list --format=freeze 2>/dev/null | wc -l)
echo "setup: deploygate installed in $VENV ($packages packages, $(du -sh "$VENV" 2>/dev/null | cut -f1)) in $(( $(date +%s) - START )) s"
