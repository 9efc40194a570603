#!/usr/bin/env bash
# The quick start: install into .venv, then run the gate three times on a local MLflow store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${DEPLOYGATE_VENV:-.venv}/bin/deploygate" demo --dir "${1:-deploygate-demo}"
