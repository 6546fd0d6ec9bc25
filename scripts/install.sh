#!/usr/bin/env bash
# Install ptlens with its test and lab extras into the current Python.
# If torch is not installed yet and no NVIDIA GPU is visible, take the CPU build that this
# platform offers (torch==2.13.0 lies on local disk on the project's machines); with a GPU,
# pip's ordinary resolution picks a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install "torch>=2.4"
  else
    "$PY" -m pip install "torch==2.13.0" || "$PY" -m pip install "torch>=2.4"
  fi
fi
"$PY" -m pip install -e ".[dev,lab]"
