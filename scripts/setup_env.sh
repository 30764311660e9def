#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with the given extras.
# Usage: scripts/setup_env.sh EXTRAS   (e.g. "demo,optimizers" or "dev")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-demo,optimizers}"
python3 -m venv .venv 2>/dev/null || true
if [ ! -x .venv/bin/python ]; then
  echo "error: could not create .venv (install python3-venv)" >&2
  exit 1
fi
.venv/bin/python -m pip install -q --upgrade pip
# Pinned torch first so the extras never pull a different build.
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[${extras}]"
