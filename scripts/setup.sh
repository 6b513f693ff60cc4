#!/usr/bin/env bash
# Create (or update) .venv at the repository root with sapiens2 and pinned dependencies.
# Torch: a .venv that already has torch >= 2.5 (CUDA, MPS, CPU) keeps it; otherwise torch 2.13.0 is installed
# (the CPU build CI uses).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c requirements/constraints.txt -e ".[test,curate]"
