"""Vector index over L2-normalised float32 vectors keyed by int64 ids (catalog version ids).

Backends are a registry of tiny classes that only build and query a raw FAISS index
(inner product = cosine on unit vectors): ``flat`` (exact), ``hnsw`` (graph, no training),
``ivf`` (inverted lists, trained on the data), ``gpu-flat`` when faiss has GPU support and a GPU
is visible. :class:`VectorIndex` owns everything else, the same for every backend:

- id mapping: raw FAISS labels are positions; ``_ids[label]`` is the catalog id, ``-1`` once
  removed (tombstone). HNSW cannot delete, so removal is uniform: tombstone + over-fetch, and
  ``rebuild()`` compacts. Re-adding an id tombstones its old label first (an update).
- build-then-swap: ``rebuild()`` snapshots the live vectors, builds a new backend *without*
  holding the lock, replays the adds/removes that arrived meanwhile, then swaps the reference
  under the lock. Searches keep using the old index during the whole build.
- persistence (helpers in ``index_files.py``): ``save(path)`` writes ``path`` (FAISS bytes),
  ``path.ids.npy`` and the sidecar ``path.json`` (embedder id, dim, backend, count, ids
  digest, file hashes, format version), each atomically (temp + fsync + rename), sidecar
  last. ``load`` checks the sidecar and the hashes *before* handing bytes to FAISS, and
  refuses another embedder's or a corrupted index with an error telling to run
  ``loradex reindex``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from hub.core.errors import BadInputError, HubError
from hub.runtime.files import atomic_write
from hub.runtime.rwlock import ReadWriteLock
from retrieval.index_backends import BACKENDS, Backend, backend_class, gpu_available
from retrieval.index_files import (
    IndexMismatchError,
    check,
    ids_path,
    npy_bytes,
    read,
    read_sidecar,
    sha,
    sidecar_path,
    stale,
)
from retrieval.index_state import IndexState

__all__ = ["BACKENDS", "FORMAT_VERSION", "IndexMismatchError", "VectorIndex"]

FORMAT_VERSION = 1
_DEFAULT_THREADS = faiss.omp_get_max_threads()
_SINGLE_QUERY_BATCH = 8  # below this many queries, 1 OpenMP thread is faster (PERF A1 obs. 2)
_TUNE_MIN = 2_000  # smaller indexes are flat (exact) under the default policy anyway
_TUNE_QUERIES = 200
# Vectors added to an approximate index since its build are scored exactly at each search;
# past max(_LATE_MIN, min(5 % of the index, _LATE_MAX)) of them a background rebuild folds them
# in (20,000 x 384 floats is ~1 ms of exact scan per query on 2 cores).
_LATE_MIN, _LATE_MAX = 2_000, 20_000


@contextlib.contextmanager
def _omp_threads(n: int | None) -> Iterator[None]:
    """FAISS OpenMP threads for one call (None: leave as is)."""
    if n is None:
        yield
        return
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(_DEFAULT_THREADS)


# ---------------------------------------------------------------- the index


def _as_matrix(vecs: np.ndarray, dim: int) -> np.ndarray:
    """Validate and L2-normalise rows: (n, dim) float32, contiguous."""
    x = np.asarray(vecs, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise BadInputError(f"vectors must be (n, {dim}), got {x.shape}", code="vector_shape")
    if not np.isfinite(x).all():
        raise BadInputError("vectors contain NaN or Inf", code="vector_not_finite")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise BadInputError("zero vector cannot be normalised", code="vector_zero")
    return np.ascontiguousarray(x / norms)


def _as_ids(ids: Iterable[int]) -> np.ndarray:
    out = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
    if out.ndim != 1 or (out < 0).any():
        raise BadInputError("ids must be a 1-D sequence of non-negative ints", code="bad_ids")
    if len(np.unique(out)) != len(out):
        raise BadInputError("ids must be unique within one call", code="bad_ids")
    return out


class VectorIndex:
    """The eight verbs: add, remove, search, count, save, load, rebuild (+ contains/ids)."""

    def __init__(
        self,
        dim: int,
        embedder_id: str,
        backend: str = "auto",
        ann_threshold: int = 50_000,
        ann_backend: str = "hnsw",
        target_recall: float = 0.97,
        **params: Any,
    ) -> None:
        if backend != "auto":
            backend_class(backend)
        backend_class(ann_backend)
        self.dim = dim
        self.embedder_id = embedder_id
        self.backend_name = backend
        self.ann_threshold = ann_threshold
        self.ann_backend = ann_backend
        self.target_recall = target_recall  # what rebuild() tunes approximate search for
        self.params = params
        self._lock = ReadWriteLock()  # searches and saves share; mutations are exclusive
        self._rebuild_lock = threading.Lock()
        self._journal: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None
        self._state = IndexState(self._new_backend(0))

    def _choose(self, n: int) -> str:
        """``auto``: exact flat below ``ann_threshold``; above it, exact on the GPU when one is
        usable (the ``gpu`` extra + CUDA), else the approximate ``ann_backend``."""
        if self.backend_name != "auto":
            return self.backend_name
        if n < self.ann_threshold:
            return "flat"
        return "gpu-flat" if gpu_available() else self.ann_backend

    def _new_backend(self, n: int, name: str | None = None) -> Backend:
        return backend_class(name or self._choose(n))(self.dim, **self.params)

    @property
    def backend(self) -> str:
        return self._state.backend.name

    def outgrown(self) -> bool:
        """A rebuild is due: under the ``auto`` policy the index grew past the threshold (or a
        GPU index was loaded where no GPU is) and would switch to the backend the policy picks;
        or an approximate index holds so many vectors added since its build that scoring them
        exactly at each search (see ``IndexState``) costs more than it should. False while a
        rebuild runs: one at a time, and the next check sees its result."""
        if self._rebuild_lock.locked():
            return False
        n, late = self.count, self._state.late
        if late > max(_LATE_MIN, min(n // 20, _LATE_MAX)):
            return True
        if self.backend_name != "auto" or n < self.ann_threshold:
            return False
        return self.backend in ("flat", "gpu-flat") and self.backend != self._choose(n)

    # -- the verbs
    def add(self, ids: Iterable[int], vecs: np.ndarray) -> None:
        ids_arr, x = _as_ids(ids), _as_matrix(vecs, self.dim)
        if len(ids_arr) != len(x):
            raise BadInputError(f"{len(ids_arr)} ids for {len(x)} vectors", code="bad_ids")
        with self._lock.write(), _omp_threads(1 if len(x) < _SINGLE_QUERY_BATCH else None):
            self._state.add(ids_arr, x)  # one vector into HNSW: 2 spinning threads only hurt
            if self._journal is not None:
                self._journal.append(("add", ids_arr, x))

    def remove(self, ids: Iterable[int]) -> int:
        ids_arr = _as_ids(ids)
        with self._lock.write():
            n = self._state.remove(ids_arr)
            if self._journal is not None:
                self._journal.append(("remove", ids_arr, None))
            return n

    def search(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, k), best first; missing slots are (-inf, -1)."""
        if k <= 0:
            raise BadInputError(f"k must be >= 1, got {k}", code="bad_k")
        q = _as_matrix(vecs, self.dim)
        threads = 1 if len(q) < _SINGLE_QUERY_BATCH else None
        # FAISS is not safe for a concurrent add + search on one index; CPU searches may overlap
        shared = self._state.backend.concurrent_search
        with self._lock.read() if shared else self._lock.write(), _omp_threads(threads):
            return self._state.search(q, k)

    def _build_tuned(self, fresh: IndexState, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Add everything to ``fresh``; with a recall target, first hold out a sample, tune
        search parameters with it as queries (they are not in the graph, like real queries;
        a stored vector would find itself and its graph neighbours at any efSearch), then
        add the sample too."""
        n = len(ids)
        if not self.target_recall or n < _TUNE_MIN:
            fresh.add(ids, vecs)
            return
        held = np.zeros(n, dtype=bool)
        sample = _TUNE_QUERIES if n <= 200_000 else _TUNE_QUERIES // 2
        held[np.random.default_rng(0).choice(n, size=sample, replace=False)] = True
        fresh.add(ids[~held], vecs[~held])
        fresh.backend.tune(vecs[~held], vecs[held], self.target_recall)
        fresh.add(ids[held], vecs[held])

    @property
    def count(self) -> int:
        return len(self._state.label_of)

    def __contains__(self, item: int) -> bool:
        return int(item) in self._state.label_of

    def ids(self) -> np.ndarray:
        with self._lock.read():
            return np.array(sorted(self._state.label_of), dtype=np.int64)

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """Stored (normalised) vectors of ``ids``; unknown ids raise."""
        with self._lock.read():
            st = self._state
            labels = []
            for i in ids:
                if int(i) not in st.label_of:
                    raise BadInputError(f"id {i} is not in the index", code="id_not_indexed")
                labels.append(st.label_of[int(i)])
            return st.backend.reconstruct(labels)

    def scores_of(self, ids: Iterable[int], q: np.ndarray) -> dict[int, float]:
        """Exact inner product of the query ``q`` with each of ``ids`` that is in the index
        (absent ids are left out): scoring known candidates needs no search."""
        with self._lock.read():
            st = self._state
            present = [(int(i), st.label_of[int(i)]) for i in ids if int(i) in st.label_of]
            if not present:
                return {}
            vecs = st.backend.reconstruct([label for _, label in present])
        sims = vecs @ np.asarray(q, np.float32).reshape(-1)
        return {i: float(s) for (i, _), s in zip(present, sims, strict=True)}

    def rebuild(
        self, backend: str | None = None, background: bool = False
    ) -> threading.Thread | None:
        """Compact tombstones / switch backend; build off-lock, then swap. With
        ``background=True`` returns the started thread (join it to wait)."""
        if background:
            t = threading.Thread(target=self.rebuild, args=(backend,), daemon=True)
            t.start()
            return t
        with self._rebuild_lock:
            with self._lock.write():
                ids, vecs = self._state.live()
                self._journal = []
            try:
                fresh = IndexState(self._new_backend(len(ids), backend))
                if len(ids):
                    fresh.backend.train(vecs)
                    self._build_tuned(fresh, ids, vecs)
                fresh.built = len(fresh.ids)  # the journal's adds below are late ones
            except BaseException:
                with self._lock.write():
                    self._journal = None
                raise
            with self._lock.write():
                for op, j_ids, j_vecs in self._journal:
                    if op == "add":
                        assert j_vecs is not None  # adds are journalled with their vectors
                        fresh.add(j_ids, j_vecs)
                    else:
                        fresh.remove(j_ids)
                self._journal = None
                self._state = fresh  # the swap: searches from now on use the new index
        return None

    # -- persistence
    def sidecar(self, index_sha: str = "", ids_sha: str = "") -> dict[str, Any]:
        live = np.sort(self.ids())
        return {
            "format_version": FORMAT_VERSION,
            "embedder_id": self.embedder_id,
            "dim": self.dim,
            "backend": self.backend,
            "backend_policy": self.backend_name,
            "ann_threshold": self.ann_threshold,
            "ann_backend": self.ann_backend,
            "target_recall": self.target_recall,
            "params": {**self.params, **self._state.backend.params},
            "count": int(len(live)),
            "built": int(self._state.built),
            "ids_digest": hashlib.sha256(live.tobytes()).hexdigest(),
            "index_sha256": index_sha,
            "ids_sha256": ids_sha,
        }

    def snapshot(self) -> IndexSnapshot:
        """The index as it is now, to be written by ``IndexSnapshot.write`` while it changes.
        Under the read lock (searches go on) only a copy is taken: a change to the index waits
        for the copy, not for serialising, hashing and writing it."""
        with self._lock.read():
            backend = self._state.backend
            return IndexSnapshot(
                backend, backend.snapshot(), self._state.ids.copy(), self.sidecar()
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        self.snapshot().write(path)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], embedder_id: str, dim: int | None = None
    ) -> VectorIndex:
        """Load and verify; ``embedder_id``/``dim`` are what the caller will query with."""
        path = Path(path)
        meta = read_sidecar(path)
        check(meta.get("format_version") == FORMAT_VERSION, path, "format version differs")
        check(
            meta.get("embedder_id") == embedder_id,
            path,
            f"built with embedder {meta.get('embedder_id')!r}, now {embedder_id!r}",
        )
        check(dim is None or meta.get("dim") == dim, path, f"dim {meta.get('dim')!r} != {dim!r}")
        data, ids_bytes = read(path), read(ids_path(path))
        check(sha(data) == meta.get("index_sha256"), path, "index file is corrupted")
        check(sha(ids_bytes) == meta.get("ids_sha256"), path, "ids file is corrupted")
        # The checksums cover the index and ids bytes, not the sidecar's own settings: a hand-
        # edited sidecar (a wrong type, an unknown backend) is stale too, so `reindex` heals it.
        try:
            index = cls(
                int(meta["dim"]),
                embedder_id,
                backend=meta["backend_policy"],
                ann_threshold=int(meta["ann_threshold"]),
                ann_backend=meta["ann_backend"],
                target_recall=float(meta.get("target_recall", 0.97)),
                **meta["params"],
            )
            ids = np.load(io.BytesIO(ids_bytes), allow_pickle=False)
            built = int(meta.get("built", len(ids)))  # older sidecars: every label is built
            backend = backend_class(meta["backend"]).from_bytes(index.dim, data, **meta["params"])
        except RuntimeError as exc:  # FAISS raises RuntimeError on bad bytes
            raise stale(path, f"FAISS cannot read it ({exc})") from exc
        except (HubError, TypeError, ValueError, AttributeError) as exc:
            why = exc.message if isinstance(exc, HubError) else f"{type(exc).__name__}: {exc}"
            raise stale(path, f"sidecar settings are invalid ({why})") from exc
        check(0 <= built <= len(ids), path, f"built {built} is not within 0..{len(ids)}")
        index._state = IndexState(backend, ids.astype(np.int64), built)
        check(index.count == meta["count"], path, "count differs from the sidecar")
        return index


@dataclass
class IndexSnapshot:
    """A copy of an index taken by ``VectorIndex.snapshot``, written without any lock."""

    backend: Backend
    raw: Any  # the backend's copy of its FAISS index
    ids: np.ndarray
    meta: dict[str, Any]

    def write(self, path: str | os.PathLike[str]) -> None:
        """``path`` (FAISS bytes), ``path.ids.npy``, then the sidecar, each atomically."""
        path = Path(path)
        data = self.backend.serialize(self.raw)
        self.raw = None  # the copy can go before the files are written
        ids_bytes = npy_bytes(self.ids)
        meta = {**self.meta, "index_sha256": sha(data), "ids_sha256": sha(ids_bytes)}
        atomic_write(path, data)
        atomic_write(ids_path(path), ids_bytes)
        atomic_write(sidecar_path(path), json.dumps(meta, indent=2, sort_keys=True).encode())
