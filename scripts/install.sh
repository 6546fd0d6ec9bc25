#!/usr/bin/env bash
# Install ptlens into the current Python (activate a venv first to keep it apart).
#   bash scripts/install.sh                 editable, with the test and lab extras (what the README's quick start uses)
#   bash scripts/install.sh WHEEL_OR_SPEC   that distribution alone, no extras (what .ci/run checks a user's install with)
# If torch is not installed yet and no NVIDIA GPU is visible, take the CPU build that this platform offers
# (torch==2.13.0 lies on local disk on the project's machines); with a GPU, pip's ordinary resolution picks a
# CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install "torch>=2.13"
  else
    "$PY" -m pip install "torch==2.13.0" || "$PY" -m pip install "torch>=2.13"
  fi
fi
if [ $# -gt 0 ]; then
  "$PY" -m pip install "$@"
else
  "$PY" -m pip install -e ".[dev,lab]"
fi
