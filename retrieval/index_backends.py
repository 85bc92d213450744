"""FAISS index backends: a registry of tiny classes that only build and query a raw index.

Inner product on unit vectors (= cosine). Labels are dense positions assigned by
:class:`retrieval.index.VectorIndex`, which owns ids, tombstones, persistence and swaps.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import faiss
import numpy as np

from hub.core.errors import BadInputError, UnknownNameError


class Backend:
    """A raw FAISS index; labels are dense positions assigned by :class:`VectorIndex`."""

    name: ClassVar[str]
    concurrent_search: ClassVar[bool] = True  # read-only CPU searches may run in parallel
    exact: ClassVar[bool] = True  # finds every stored vector (flat); False: approximate

    def __init__(self, dim: int, index: Any | None = None, **params: Any) -> None:
        self.dim = dim
        self.params = params
        self.index = index if index is not None else self._make(dim)

    def _make(self, dim: int) -> Any:
        raise NotImplementedError

    def train(self, vecs: np.ndarray) -> None:
        """Only IVF needs training; others accept any data."""

    def tune(self, base: np.ndarray, queries: np.ndarray, target_recall: float) -> dict[str, Any]:
        """Pick search-time parameters so that ``queries`` (vectors not stored) reach
        ``target_recall`` against an exact scan of ``base`` (exactly the stored vectors, in
        label order). Only HNSW has anything to pick; returns what it set."""
        return {}

    def add(self, vecs: np.ndarray) -> None:
        self.index.add(vecs)

    def search(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(vecs, k)

    def reconstruct_all(self) -> np.ndarray:
        """(ntotal, dim): the stored vectors, for rebuilds."""
        return self.index.reconstruct_n(0, self.index.ntotal)

    def reconstruct(self, labels: Sequence[int]) -> np.ndarray:
        """(len(labels), dim): the stored vectors at ``labels``."""
        return np.stack([self.index.reconstruct(int(label)) for label in labels])

    def snapshot(self) -> Any:
        """A CPU copy of the raw index, for ``serialize`` to write while the live one changes
        (a memory copy takes about a third of the time serialising does)."""
        return faiss.clone_index(self.index)

    @staticmethod
    def serialize(snapshot: Any) -> bytes:
        return faiss.serialize_index(snapshot).tobytes()

    @classmethod
    def from_bytes(cls, dim: int, data: bytes, **params: Any) -> Backend:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        backend = cls(dim, index=index, **params)
        backend._apply_search_params()
        return backend

    def _apply_search_params(self) -> None:
        pass


class FlatBackend(Backend):
    name = "flat"

    def _make(self, dim: int) -> Any:
        return faiss.IndexFlatIP(dim)


class HNSWBackend(Backend):
    """HNSW, M 32, efConstruction 80 (PERF A1: recall@10 0.96 at 10^6 reachable). efSearch is
    not a constant: recall at a given efSearch falls as the index grows (0.99 at 10^5 vs 0.83
    at 10^6 for ef 64), so :meth:`tune` measures it on the stored data after each build and
    keeps the smallest efSearch that reaches the target recall, persisted in the sidecar."""

    name = "hnsw"
    exact = False
    EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)

    def _make(self, dim: int) -> Any:
        index = faiss.IndexHNSWFlat(dim, int(self.params.get("m", 32)), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(self.params.get("ef_construction", 80))
        self.index = index
        self._apply_search_params()
        return index

    def _apply_search_params(self) -> None:
        self.index.hnsw.efSearch = int(self.params.get("ef_search", 128))

    def tune(
        self, base: np.ndarray, queries: np.ndarray, target_recall: float, k: int = 10
    ) -> dict[str, Any]:
        exact = _exact_top(base, queries, k)
        chosen = self.EF_LADDER[-1]
        for ef in self.EF_LADDER:
            if ef < k:
                continue
            self.index.hnsw.efSearch = ef
            _, found = self.index.search(queries, k)
            if _recall(found, exact) >= target_recall:
                chosen = ef
                break
        self.params["ef_search"] = chosen
        self._apply_search_params()
        return {"ef_search": chosen}


class IVFBackend(Backend):
    """IVF-Flat with ~4 sqrt(n) lists; nprobe trades recall for speed."""

    exact = False

    name = "ivf"

    def __init__(self, dim: int, index: Any | None = None, **params: Any) -> None:
        self._map_lock = threading.Lock()
        super().__init__(dim, index, **params)

    def _make(self, dim: int) -> Any:
        self._quantizer = faiss.IndexFlatIP(dim)
        nlist = int(self.params.get("nlist", 1024))
        return faiss.IndexIVFFlat(self._quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)

    def train(self, vecs: np.ndarray) -> None:
        if not self.index.is_trained:
            if len(vecs) < self.index.nlist:
                raise BadInputError(
                    f"ivf needs >= nlist={self.index.nlist} vectors to train, got {len(vecs)}",
                    code="index_too_small",
                )
            self.index.train(vecs)
        self._apply_search_params()

    def add(self, vecs: np.ndarray) -> None:
        self.train(vecs)
        self.index.add(vecs)

    def reconstruct_all(self) -> np.ndarray:
        self._direct_map()
        return self.index.reconstruct_n(0, self.index.ntotal)

    def reconstruct(self, labels: Sequence[int]) -> np.ndarray:
        self._direct_map()
        return super().reconstruct(labels)

    def _direct_map(self) -> None:
        """IVF finds a vector by label only through a direct map, built once on first need
        (a search holds only the read lock, hence a lock of its own)."""
        with self._map_lock:
            if self.index.direct_map.no():  # no map yet
                self.index.make_direct_map()

    def _apply_search_params(self) -> None:
        self.index.nprobe = int(self.params.get("nprobe", 64))


def _exact_top(vecs: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """(len(q), k) exact top-k labels by inner product (blocked scan, no copy of the data)."""
    return faiss.knn(q, np.ascontiguousarray(vecs), k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean overlap of the approximate and exact top-k lists."""
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return hits / exact.size


def gpu_available() -> bool:
    """faiss built with GPU support (the ``gpu`` extra) and a CUDA device visible."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class GpuFlatBackend(FlatBackend):
    """Exact inner-product search resident on GPU 0 (exact beats HNSW's recall, and a GPU
    scans 10^6 x 384 in well under a millisecond). Saved as a CPU flat index; loaded where no
    GPU is visible it stays a CPU flat index (exact, slower) until the next rebuild."""

    name = "gpu-flat"
    concurrent_search = False  # GPU resources are not thread-safe: one call at a time

    def _make(self, dim: int) -> Any:
        return self._to_gpu(faiss.IndexFlatIP(dim))

    def _to_gpu(self, cpu_index: Any) -> Any:
        if not gpu_available():
            return cpu_index
        self._res = faiss.StandardGpuResources()  # kept alive as long as the index
        return faiss.index_cpu_to_gpu(self._res, 0, cpu_index)

    @property
    def on_gpu(self) -> bool:
        return hasattr(self, "_res")

    def snapshot(self) -> Any:
        return faiss.index_gpu_to_cpu(self.index) if self.on_gpu else super().snapshot()

    @classmethod
    def from_bytes(cls, dim: int, data: bytes, **params: Any) -> Backend:
        backend = cls(dim, index=faiss.IndexFlatIP(dim), **params)
        backend.index = backend._to_gpu(faiss.deserialize_index(np.frombuffer(data, np.uint8)))
        return backend

    def reconstruct_all(self) -> np.ndarray:
        cpu = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        return cpu.reconstruct_n(0, cpu.ntotal)


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (FlatBackend, HNSWBackend, IVFBackend, GpuFlatBackend)
}


def backend_class(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        known = sorted([*BACKENDS, "auto"])
        raise UnknownNameError(
            f"unknown index backend {name!r}; known: {', '.join(known)}", known=known
        ) from None
