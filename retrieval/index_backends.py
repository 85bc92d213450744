"""FAISS index backends: a registry of tiny classes that only build and query a raw index.

Inner product on unit vectors (= cosine). Labels are dense positions assigned by
:class:`retrieval.index.VectorIndex`, which owns ids, tombstones, persistence and swaps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import faiss
import numpy as np

from hub.core.errors import BadInputError, UnknownNameError


class Backend:
    """A raw FAISS index; labels are dense positions assigned by :class:`VectorIndex`."""

    name: ClassVar[str]

    def __init__(self, dim: int, index: Any | None = None, **params: Any) -> None:
        self.dim = dim
        self.params = params
        self.index = index if index is not None else self._make(dim)

    def _make(self, dim: int) -> Any:
        raise NotImplementedError

    def train(self, vecs: np.ndarray) -> None:
        """Only IVF needs training; others accept any data."""

    def add(self, vecs: np.ndarray) -> None:
        self.index.add(vecs)

    def search(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(vecs, k)

    def reconstruct_all(self) -> np.ndarray:
        """(ntotal, dim): the stored vectors, for rebuilds."""
        return self.index.reconstruct_n(0, self.index.ntotal)

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self.index).tobytes()

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
    """HNSW32, efConstruction 80; efSearch 128 reaches recall@10 >= 0.95 at 1e5 (PERF A1)."""

    name = "hnsw"

    def _make(self, dim: int) -> Any:
        index = faiss.IndexHNSWFlat(dim, int(self.params.get("m", 32)), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(self.params.get("ef_construction", 80))
        self.index = index
        self._apply_search_params()
        return index

    def _apply_search_params(self) -> None:
        self.index.hnsw.efSearch = int(self.params.get("ef_search", 128))


class IVFBackend(Backend):
    """IVF-Flat with ~4 sqrt(n) lists; nprobe trades recall for speed."""

    name = "ivf"

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
        self.index.make_direct_map()
        return self.index.reconstruct_n(0, self.index.ntotal)

    def _apply_search_params(self) -> None:
        self.index.nprobe = int(self.params.get("nprobe", 64))


BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (FlatBackend, HNSWBackend, IVFBackend)}

if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:  # pragma: no cover

    class GpuFlatBackend(FlatBackend):
        """Exact search resident on the GPU; saved as a CPU flat index."""

        name = "gpu-flat"

        def _make(self, dim: int) -> Any:
            self._res = faiss.StandardGpuResources()
            return faiss.index_cpu_to_gpu(self._res, 0, faiss.IndexFlatIP(dim))

        def to_bytes(self) -> bytes:
            return faiss.serialize_index(faiss.index_gpu_to_cpu(self.index)).tobytes()

    BACKENDS[GpuFlatBackend.name] = GpuFlatBackend


def backend_class(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        known = sorted([*BACKENDS, "auto"])
        raise UnknownNameError(
            f"unknown index backend {name!r}; known: {', '.join(known)}", known=known
        ) from None
