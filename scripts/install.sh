#!/usr/bin/env bash
# Create .venv with the pinned dependencies (requirements/lock.txt) and histocurate in it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r requirements/lock.txt
python -m pip install -q --no-deps -e .
