#!/usr/bin/env bash
# Install (if needed), then ruff, mypy and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import histocurate, torch, prefect" 2>/dev/null; then
  bash scripts/install.sh
fi
. .venv/bin/activate
python -m pip install -q --no-deps -e .
ruff check .
ruff format --check .
mypy
python -m pytest -q "$@"
