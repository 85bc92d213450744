#!/usr/bin/env bash
# Every GPU check of issues #4 and #5 in one run on the lent GPU machine (README "GPU checks").
#
# Prepare here first: bash scripts/gpu_bundle.sh. Then one device call, carrying the bundle:
#   run(command="bash scripts/gpu_check.sh", carry=[".gpu-bundle"], timeout_s=540)
# Logs go to $OUT (the device tool brings them back) or /tmp/gpu-check. Each step has its own
# timeout and a failing step does not stop the next; the exit status is the first failure's.
# Steps: (1) the CUDA tests of the merge engine (tests/test_merging_gpu.py: CPU agreement,
# k-means on the device, fast re-rank certificate and fallback, allocator peak, no dense
# tensor, the device-resident path); (2) merge speed on the full Llama-2-7B shape, end to end
# and device-resident, next to PEFT add_weighted_adapter on the same GPU (2 layers, scaled);
# (3) MiniLM throughput on CPU and CUDA and their agreement. The faiss GPU index is not
# measured here: faiss-gpu-cu12 needs CUDA 12 runtime wheels far over the 64 MiB carry limit.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu-bundle/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 - <<'PYEOF' || exit 1
from pathlib import Path

from safetensors.torch import load_file, save_file

src, dst = Path(".gpu-bundle/minilm"), Path("/tmp/minilm")
dst.mkdir(exist_ok=True)
for f in src.rglob("*"):
    if f.is_file() and f.name != "model.fp16.safetensors":
        (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        (dst / f.relative_to(src)).write_bytes(f.read_bytes())
weights = load_file(src / "model.fp16.safetensors")
save_file({k: v.float().contiguous() for k, v in weights.items()}, dst / "model.safetensors")
PYEOF
status=0
step() {  # step NAME SECONDS CMD...: run, tee to $out/NAME.log, remember the first failure
  local name=$1 secs=$2
  shift 2
  echo "== $name: $*"
  timeout "$secs" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c 'import peft, torch, transformers as t; print("torch", torch.__version__,
  torch.cuda.get_device_name(), "peft", peft.__version__, "transformers", t.__version__)' |
  tee -a "$out/gpu.txt"
step tests 180 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_merging_gpu.py
step merge_speed_7b 300 python3 benchmarks/merge_speed.py --shape 7b --device cuda \
  --methods svd,svd_fast,cat,lego,ties
step embedder 120 python3 benchmarks/embedder_speed.py --sentences 512 --model-dir /tmp/minilm
exit "$status"
