"""MiniLM on ONNX Runtime: the same vectors as the torch path, a query ~2.5x sooner on a CPU.

One query through torch costs ~11 ms on the 2-core dev box, mostly per-op overhead of a
6-layer model over a dozen tokens; ONNX Runtime runs the same graph in ~4-5 ms. Batches gain
less (1.1-1.3x): on both they are bound by the matrix products (``benchmarks/embedder_speed.py``
prints both side by side). The graph includes
mean pooling and normalisation, so it returns the unit vectors ``MiniLMEmbedder`` returns, to
~2e-7: indexes built by either backend serve the other (same ``embedder_id``).

The graph is exported once from the packaged safetensors (torch's ``torch.export``-based
exporter, which needs ``onnx`` and ``onnxscript``; the ``onnx`` extra installs them with
``onnxruntime``) into a per-user cache keyed by the model files and the torch version, written
under a lock, to a temporary name, then renamed; a sidecar records the file's sha256, checked
on load, so a truncated or altered file is exported again instead of run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import StorageError
from hub.runtime.files import atomic_write, sha256_file
from retrieval.embedders import SINGLE_THREAD_MAX_TEXTS
from retrieval.tokenization import FIELDS, FastTokenizer

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bump when the exported graph changes (inputs, outputs, pooling)
CHECK_TOLERANCE = 1e-4  # max |ONNX - torch| on the check texts before an export is published
# Texts a new graph is checked on before it is published: lengths 1 to 256 tokens, batch 4.
CHECK_TEXTS = ["a", "Reverse the order of the words.", "é 数字 " * 40, "two numbers, multiplied"]
OUTPUT = "sentence_vector"  # not "embedding(s)": BERT's own node names would clash
DIM = 384


def onnx_runtime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def default_cache_dir() -> Path:
    """Where exported graphs live: ``LORADEX_EMBEDDER_CACHE_DIR`` (the ``embedder_cache_dir``
    setting, read here too so that embedders made outside a service, in benchmarks and tests,
    share it), else per user, shared by every data dir (the file depends only on the model
    package and torch)."""
    named = os.environ.get("LORADEX_EMBEDDER_CACHE_DIR")
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "loradex" / "onnx"


def export_key(model_dir: Path) -> str:
    """Names the export: model files (size and mtime, not a 90 MB hash per start), torch's
    version (its exporter writes the graph) and this module's format."""
    weights = Path(model_dir) / "model.safetensors"
    st = weights.stat()
    torch_version = importlib.metadata.version("torch")
    raw = f"{weights.resolve()}|{st.st_size}|{st.st_mtime_ns}|{torch_version}|{EXPORT_FORMAT}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def export_graph(model_dir: Path, dest: Path) -> None:
    """Export MiniLM + mean pooling + L2 normalisation to ``dest``, then check it against torch
    (``cached_graph`` gives a temporary name and publishes it only if this returns)."""
    import torch
    from torch.export import Dim
    from transformers import AutoModel

    from retrieval.embedders import _quietly

    model = _quietly(
        lambda: AutoModel.from_pretrained(model_dir, local_files_only=True, use_safetensors=True)
    )

    class Pooled(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    sample = FastTokenizer(model_dir, 512)(["an example sentence", "and a longer second one"])
    args = tuple(torch.from_numpy(sample[name]) for name in FIELDS)
    batch, tokens = Dim("batch"), Dim("tokens", max=512)
    with _exporter_quiet():
        program = torch.onnx.export(
            Pooled(model).eval(),
            args,
            input_names=list(FIELDS),
            output_names=[OUTPUT],
            dynamic_shapes=tuple({0: batch, 1: tokens} for _ in FIELDS),
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    if program is None:  # only when given a file name, which this call does not pass
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(dest))
    _check_against_torch(dest, Pooled(model).eval(), model_dir)


def _check_against_torch(graph: Path, pooled: Any, model_dir: Path) -> None:
    """Publish a graph only if it gives the torch model's vectors (batch sizes and lengths
    other than the export's sample): an exporter that mistranslates an op fails here, not in
    every search after."""
    import onnxruntime as ort
    import torch

    encoded = FastTokenizer(model_dir, 256)(CHECK_TEXTS)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT], {name: encoded[name] for name in FIELDS})
    with torch.inference_mode():
        want = pooled(*(torch.from_numpy(encoded[name]) for name in FIELDS)).numpy()
    worst = float(np.abs(got - want).max())
    if not worst <= CHECK_TOLERANCE:  # NaN fails too
        raise RuntimeError(f"the exported text model disagrees with torch by {worst:.2e}")


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The exporter's notes (skipped torchvision ops, axis renames, deprecations) are not the
    user's business: a first `loradex search` prints its results, not a screen of warnings."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter_log.setLevel(level)


def ensure_graph(model_dir: Path, cache_dir: Path) -> Path:
    """The exported graph for ``model_dir``: the cached one when its sha256 checks, else a
    fresh export (one process at a time; the others wait and reuse it)."""
    return cached_graph(model_dir, cache_dir, "", lambda dest: export_graph(model_dir, dest))


def cached_graph(
    model_dir: Path, cache_dir: Path, variant: str, build: Callable[[Path], None]
) -> Path:
    """``minilm-KEY{variant}.onnx`` in ``cache_dir``, made when absent or torn, under a file
    lock, by ``build(tmp)``: it writes and checks a temporary file (raising when the check
    fails), which is then renamed into place and recorded, sha256 in a sidecar. ``variant``
    names graphs derived from the export (the int8 one)."""
    from filelock import FileLock

    cache_dir = Path(cache_dir)
    key = export_key(model_dir)
    stem = f"minilm-{key}{variant}"
    graph, sidecar = cache_dir / f"{stem}.onnx", cache_dir / f"{stem}.json"
    if _intact(graph, sidecar):  # no lock to take: a read-only shared cache serves as it is
        return graph
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_dir / f"{stem}.lock")):
            if _intact(graph, sidecar):
                return graph
            if graph.exists():
                log.warning("cached text model graph %s failed its checksum: remaking it", graph)
            tmp = graph.with_name(f".{graph.name}.{os.getpid()}.tmp")  # swept if we die
            try:
                build(tmp)
                os.replace(tmp, graph)
            finally:
                tmp.unlink(missing_ok=True)
            record = {"sha256": sha256_file(graph), "model_dir": str(model_dir), "key": key}
            atomic_write(sidecar, json.dumps(record).encode())
            _prune_superseded(cache_dir, Path(model_dir), key)
            return graph
    except OSError as exc:
        raise StorageError(
            f"cannot write the ONNX export of the text model under {cache_dir}: {exc}; set "
            "LORADEX_EMBEDDER_CACHE_DIR to a writable directory",
            code="embedder_unavailable",
        ) from exc


def _prune_superseded(cache_dir: Path, model_dir: Path, key: str) -> None:
    """Remove the exports this one replaces (same model files before a torch or package
    upgrade) and those of model directories that are gone (a deleted venv): 90 MB each."""
    for other in cache_dir.glob("minilm-*.json"):
        try:
            record = json.loads(other.read_text())
            source = Path(record["model_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.get("key") == key:
            continue  # this export, or a graph derived from it
        if source.exists() and source.resolve() != model_dir.resolve():
            continue  # another install's export, still in use
        other.with_suffix(".onnx").unlink(missing_ok=True)
        other.unlink(missing_ok=True)
    for partial in cache_dir.glob(".minilm-*.tmp"):  # ".NAME.PID.tmp" of an export killed
        pid = partial.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _intact(graph: Path, sidecar: Path) -> bool:
    try:
        recorded = json.loads(sidecar.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return graph.is_file() and sha256_file(graph) == recorded


class OnnxMiniLM:
    """Runs the exported graph on one ONNX Runtime session of one intra-op thread, data-parallel:
    a few texts run in the calling thread (no pool to wake, and a busy box cannot stall it); a
    batch is sorted by length, cut into runs of at most ``run_size`` texts, at least one per
    worker, and spread over ``workers`` threads (0: one per core) that share the session (its
    ``run`` is safe to call concurrently). On the 2-core dev box, over texts of 4-90 tokens,
    that is 1.8x the sentences/s of the one two-thread session over batches of 64 it replaced:
    less padding and no intra-op barriers (``benchmarks/embedder_speed.py`` times both)."""

    def __init__(
        self,
        graph: Path,
        tokenize: Callable[[Sequence[str]], Any],
        workers: int = 0,
        run_size: int = 8,
    ) -> None:
        import onnxruntime as ort

        self.graph = graph
        self.tokenize = tokenize  # texts -> numpy encodings, exactly as the torch path makes
        self.workers = workers or len(os.sched_getaffinity(0))
        self.run_size = run_size
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # Busy-waiting workers would burn the cores a merge or a request needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        # a graph ONNX Runtime refuses fails here, at load
        self._session = ort.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32 unit vectors, in the order given."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        if len(texts) <= SINGLE_THREAD_MAX_TEXTS or self.workers == 1:  # a query: no pool
            step = self.run_size
            return np.concatenate(
                [self._run(texts[i : i + step]) for i in range(0, len(texts), step)]
            )
        # Every worker gets work even in a small batch (a server's few concurrent new queries:
        # in the calling thread alone they made REST new-query throughput fall by a fifth).
        step = min(self.run_size, -(-len(texts) // self.workers))  # ceil(len / workers)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        runs = [order[i : i + step] for i in range(0, len(order), step)]
        parts = self._workers().map(lambda run: self._run([texts[i] for i in run]), runs)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        out[np.concatenate(runs)] = np.concatenate(list(parts))
        return out

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenize(texts)
        feed = {name: enc[name] for name in FIELDS}  # int64 arrays from FastTokenizer
        (vectors,) = self._session.run([OUTPUT], feed)
        return np.asarray(vectors, dtype=np.float32)

    def _workers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="minilm-onnx")
            return self._pool
