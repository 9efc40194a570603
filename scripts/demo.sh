#!/usr/bin/env bash
# The quick start: install into .venv (the first time: ~2.2 GB, several minutes; see the README), then
# run the gate three times on a local MLflow store (about 20 s).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "demo: running the gate three times (about 20 s)"
exec "${DEPLOYGATE_VENV:-.venv}/bin/deploygate" demo --dir "${1:-deploygate-demo}"
