"""One generation of a :class:`retrieval.index.VectorIndex`: a raw backend, the label -> id
table with its tombstones, and the exact scan of vectors added after an approximate build."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from retrieval.index_backends import Backend


class IndexState:
    """One immutable-by-convention generation: a backend plus its label -> id table.

    An approximate backend can miss a vector inserted after its build: HNSW links a new node
    to its nearest neighbours, but they keep their own closer links, so a node unlike the rest
    (a new kind of card among 10^5 others) gets no incoming edge and no search reaches it. So
    labels from ``built`` on (added since the build) are also scored exactly at every search,
    and ``VectorIndex.rebuild`` (due per ``VectorIndex.outgrown``) folds them into a new graph."""

    def __init__(
        self, backend: Backend, ids: np.ndarray | None = None, built: int | None = None
    ) -> None:
        self.backend = backend
        self.ids = ids if ids is not None else np.zeros(0, dtype=np.int64)  # label -> id / -1
        self.label_of: dict[int, int] = {int(i): lab for lab, i in enumerate(self.ids) if i >= 0}
        self.built = len(self.ids) if built is None else built  # labels in the built graph
        self._late: np.ndarray | None = None  # vectors of labels >= built (lazy cache)

    @property
    def dead(self) -> int:
        return len(self.ids) - len(self.label_of)

    @property
    def late(self) -> int:
        """Labels added after the build that an approximate search might not reach."""
        return 0 if self.backend.exact else len(self.ids) - self.built

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.remove(ids)  # update = tombstone the old vector, append the new one
        self.backend.add(vecs)
        start = len(self.ids)
        self.ids = np.concatenate([self.ids, ids])
        for off, i in enumerate(ids):
            self.label_of[int(i)] = start + off
        self._late = None

    def remove(self, ids: Iterable[int]) -> int:
        removed = 0
        for i in ids:
            label = self.label_of.pop(int(i), None)
            if label is not None:
                self.ids[label] = -1
                removed += 1
        return removed

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        alive = len(self.label_of)
        fetch = min(k + self.dead, len(self.ids))  # over-fetch past tombstones
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        out = np.full((len(q), k), -1, dtype=np.int64)
        if alive == 0 or fetch == 0:
            return scores, out
        raw_s, raw_l = self.backend.search(q, fetch)
        if self.late:
            raw_s, raw_l = self._with_late(q, raw_s, raw_l)
        for row in range(len(q)):
            labels = raw_l[row]
            ok = labels >= 0
            ids = np.where(ok, self.ids[np.where(ok, labels, 0)], -1)
            keep = ids >= 0
            n = min(k, int(keep.sum()))
            scores[row, :n] = raw_s[row][keep][:n]
            out[row, :n] = ids[keep][:n]
        return scores, out

    def _with_late(
        self, q: np.ndarray, raw_s: np.ndarray, raw_l: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The approximate hits merged with an exact scan of the labels added since the build
        (a label found both ways is kept once), best first."""
        if self._late is None:
            self._late = self.backend.reconstruct(range(self.built, len(self.ids)))
        late_s = q @ self._late.T  # (n_queries, late)
        late_l = np.arange(self.built, len(self.ids), dtype=np.int64)
        scores = np.concatenate([raw_s, late_s], axis=1)
        labels = np.concatenate([raw_l, np.broadcast_to(late_l, late_s.shape)], axis=1)
        labels = np.where(labels >= self.built, -1, labels)  # graph copies of late labels go
        labels[:, raw_l.shape[1] :] = late_l
        scores = np.where(labels >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vecs) of the live entries, label order."""
        labels = np.flatnonzero(self.ids >= 0)
        if len(labels) == 0:
            return self.ids[labels], np.zeros((0, self.backend.dim), dtype=np.float32)
        return self.ids[labels], self.backend.reconstruct_all()[labels]
