#!/usr/bin/env bash
# Create (or update) .venv at the repository root with sapiens2 and pinned dependencies.
# Torch: a .venv that already has torch >= 2.5 (CUDA, MPS, CPU) keeps it; otherwise torch 2.13.0 is installed
# (the CPU build CI uses). Chromium (for the browser test of `sapiens2 serve`) comes from apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c requirements/constraints.txt -e ".[test,curate,serve,detect]"
# The browser test drives the distribution's Chromium (Playwright's own browser download needs the internet).
# Installed when missing and this machine can (root + apt); elsewhere that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "setup.sh: could not install chromium; the browser test will be skipped" >&2
fi
