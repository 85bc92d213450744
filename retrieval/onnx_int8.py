"""MiniLM with int8 weights: the exported graph, quantized, for CPU serving (``minilm-int8``).

ONNX Runtime's dynamic quantization stores the 36 weight matrices of the six layers' matrix
products as int8, one scale per output channel, and quantizes each activation on the fly; the
products then run as int8 dot products (VNNI where the CPU has it). On the 2-core dev box a
query costs ~1.4 ms instead of ~4.0 ms for the fp32 graph, and ~2x the sentences/s
(``benchmarks/embedder_speed.py``). The vectors move: cosine to the fp32 ones 0.994 on average,
0.985 at worst, over the zoo's task descriptions (one scale per tensor instead: 0.965 on
average, so per channel it is), and the zoo's text r@1 goes from 0.874 to 0.847
(``benchmarks/retrieval.py --embedder minilm-int8``). So this is another embedder with its own
id, not another runtime of ``minilm``: indexes, the weight encoder and the SG-LoRA generator
made for one are refused for the other, with the command that rebuilds them.

The quantized graph is made from the cached fp32 export, once per user, beside it (same key,
same lock-and-rename and sha256 sidecar, ``retrieval.onnx_minilm.cached_graph``), and is
published only if its vectors stay within ``MIN_COSINE`` of the fp32 graph's on check texts.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from retrieval.onnx_minilm import CHECK_TEXTS, OUTPUT, cached_graph, ensure_graph
from retrieval.tokenization import FIELDS, FastTokenizer

QUANT_FORMAT = 1  # bump when the recipe below changes: the graph is remade, the id changes
# Measured 0.985 worst / 0.994 mean on the zoo's 147 task descriptions: a recipe change or an
# ONNX Runtime release that lands below this is a regression, not a model.
MIN_COSINE = 0.97


def ensure_int8_graph(model_dir: Path, cache_dir: Path) -> Path:
    """The quantized graph for ``model_dir`` (exporting the fp32 one first if needed)."""
    fp32 = ensure_graph(model_dir, cache_dir)
    return cached_graph(
        model_dir,
        cache_dir,
        f"-int8q{QUANT_FORMAT}",
        lambda dest: quantize_graph(fp32, dest, model_dir),
    )


def quantize_graph(source: Path, dest: Path, model_dir: Path) -> None:
    """Write the int8 graph of ``source`` to ``dest``, then check its vectors against the
    source's (``cached_graph`` gives a temporary name and publishes it only if this returns)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="loradex-int8-") as work, _root_logging_untouched():
        prepared = Path(work) / "prepared.onnx"
        # ONNX Runtime's recommended first step (graph optimisation + shape inference);
        # symbolic shape inference is skipped: the exporter's shapes are already symbolic.
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
        quantize_dynamic(
            prepared,
            dest,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],  # the weight products; Gather stays fp32
        )
    worst = min_cosine(source, dest, model_dir)
    if not worst >= MIN_COSINE:  # NaN fails too
        raise RuntimeError(
            f"the int8 text model's vectors are only {worst:.4f} cosine-close to the fp32 "
            f"model's (at least {MIN_COSINE} expected)"
        )


def min_cosine(reference: Path, candidate: Path, model_dir: Path) -> float:
    """Smallest cosine between the two graphs' vectors on ``CHECK_TEXTS``, one text per run
    as ``MiniLMInt8Embedder`` runs them."""
    import onnxruntime as ort

    tokenize = FastTokenizer(model_dir, 256)
    vectors = []
    for graph in (reference, candidate):
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        rows = []
        for text in CHECK_TEXTS:
            encoded = tokenize([text])
            (vector,) = session.run([OUTPUT], {name: encoded[name] for name in FIELDS})
            rows.append(np.asarray(vector[0], dtype=np.float64))
        vectors.append(np.stack(rows))
    a, b = vectors
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosines.min())


@contextlib.contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """The quantizer logs through the module-level ``logging.info``, which installs a stderr
    handler on the root logger when it has none: every later warning of any library would then
    print in a CLI or a server. Whatever it adds is removed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
