"""Search core: query text -> ranked version ids, from a text index, a weight index or both.

Both indexes are keyed by catalog version id. The text index holds card embeddings; the weight
index holds weight-encoder embeddings, which live in the same text space, so a text query can
be scored against both.

Hybrid fusion rule (documented contract): ``score = w_text * text_cos + w_weights * weight_cos``
over the union of both candidate lists. A candidate that one signal did not return is scored
exactly on that side from its stored vector, so an adapter's score is a function of the query
alone, whatever k is; an adapter with no vector on a side (no weight embedding: the encoder
cannot read it) is scored by its other side alone (a stand-in taken from the lists, their
lowest returned score, made its score depend on k and on how deep they were read).
``why`` names the signals that put the hit in their own top-k ("text",
"weights" or "text+weights", the last also for a hit in neither top k: there by the sum);
``text_score`` / ``weight_score`` are the exact cosines.

The top k by fused score is exact, not "the best of each side's top k": the lists are read m
deep (m from k, times 4 each round) until the k-th fused score reaches the most an adapter
missing from both lists could score, ``w_text * (m-th text score) + w_weights * (m-th weight
score)``, or either m-th score alone where one index holds more vectors than the other (Fagin's
threshold algorithm). Reading only k deep dropped adapters that are
second-best on both sides, and a smaller k was not a prefix of a larger one. The depth stops
at ``HYBRID_MAX_DEPTH`` (then the answer is as approximate as an ANN index already is).

Filters: the catalog evaluates metadata filters and passes ``allowed`` ids; we over-fetch
(``k * overfetch``, growing until enough allowed hits or the whole index) and filter.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from hub.core.errors import BadInputError, NotFoundError, UnknownNameError
from retrieval.index import VectorIndex

MAX_QUERY_CHARS = 2000  # a query is a task description, not a document; MiniLM reads 256 tokens
MAX_K = 1000
EXACT_FILTER_MAX = 2000  # allowed sets up to this size (or 5 % of the index) are scored exactly
MODES = ("text", "weights", "hybrid")
HYBRID_MAX_DEPTH = 4096  # per side; on an exact index below this size hybrid is exact


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    text_score: float | None
    weight_score: float | None
    why: str


@dataclass
class SearchEngine:
    """``embed_query`` maps a query text to a unit vector (the text embedder's ``embed``)."""

    embed_query: Callable[[str], np.ndarray]
    text_index: VectorIndex | None = None
    weight_index: VectorIndex | None = None
    w_text: float = 0.5
    w_weights: float = 0.5
    overfetch: int = 4

    def search(
        self, query: str, k: int = 10, mode: str = "hybrid", allowed: Collection[int] | None = None
    ) -> list[Hit]:
        check_request(query, k, mode)
        mode = self._effective_mode(mode)
        q = np.asarray(self.embed_query(query), np.float32).reshape(1, -1)
        if mode == "hybrid":
            return self._hybrid(q, k, allowed)
        index = self.text_index if mode == "text" else self.weight_index
        return [
            Hit(i, s, s if mode == "text" else None, s if mode == "weights" else None, mode)
            for i, s in self._top(index, mode, q, k, allowed)
        ]

    def _hybrid(self, q: np.ndarray, k: int, allowed: Collection[int] | None) -> list[Hit]:
        """The exact top k by fused score (threshold algorithm, see the module docstring)."""
        text_index = self._require(self.text_index, "text")
        weight_index = self._require(self.weight_index, "weights")
        total = max(text_index.count, weight_index.count)
        depth = k
        while True:
            text = _filtered(text_index, q, depth, allowed, self.overfetch)
            weights = _filtered(weight_index, q, depth, allowed, self.overfetch)
            hits = self._fuse(q, text, weights, k)
            bound = self._unseen_bound(text, weights, depth)
            if (
                (len(text) < depth and len(weights) < depth)  # both read to the end
                or depth >= min(total, HYBRID_MAX_DEPTH)
                or (len(hits) == k and hits[-1].score >= bound)
            ):
                return hits
            depth = min(depth * 4, total, HYBRID_MAX_DEPTH)

    def _unseen_bound(self, text: list[tuple[int, float]], weights, depth: int) -> float:
        """The most an adapter in neither list can score. A list shorter than ``depth`` was read
        to its end: no unseen adapter has a vector on that side. Otherwise an unseen adapter's
        score there is at most the list's last one. One with vectors on both sides scores the
        weighted sum; one with a vector on one side only scores that side (``_fuse``), which is
        possible only where one index holds more vectors than the other."""
        assert self.text_index is not None and self.weight_index is not None
        more_t = len(text) == depth
        more_w = len(weights) == depth
        last_t = text[-1][1] if more_t else -np.inf
        last_w = weights[-1][1] if more_w else -np.inf
        bounds = [self.w_text * last_t + self.w_weights * last_w]
        if self.text_index.count > self.weight_index.count:
            bounds.append(last_t)  # text only: an adapter the encoder cannot read
        if self.weight_index.count > self.text_index.count:
            bounds.append(last_w)
        return float(max(bounds))

    def _effective_mode(self, mode: str) -> str:
        """Hybrid with one index missing or empty (no encoder trained yet) is that one mode."""
        if mode != "hybrid":
            return mode
        has_text = self.text_index is not None and self.text_index.count > 0
        has_weights = self.weight_index is not None and self.weight_index.count > 0
        if has_text and not has_weights:
            return "text"
        if has_weights and not has_text:
            return "weights"
        return mode

    def similar(self, id: int, k: int = 10, allowed: Collection[int] | None = None) -> list[Hit]:
        """Nearest adapters to ``id`` in weight space, ``id`` itself excluded."""
        check_k(k)
        index = self._require(self.weight_index, "weights")
        if id not in index:
            raise NotFoundError(f"version {id} has no weight embedding", code="not_indexed")
        return self.similar_to(index.vectors([id]), k, exclude={id}, allowed=allowed)

    def similar_to(
        self,
        vec: np.ndarray,
        k: int = 10,
        exclude: Collection[int] = (),
        allowed: Collection[int] | None = None,
    ) -> list[Hit]:
        """Nearest adapters to a weight-space vector, ``exclude`` left out."""
        check_k(k)
        index = self._require(self.weight_index, "weights")
        skip = set(exclude)
        if allowed is None:
            top = _filtered(index, vec, k + len(skip), None, self.overfetch)
        else:
            top = _filtered(index, vec, k, set(allowed) - skip, self.overfetch)
        return [Hit(i, s, None, s, "weights") for i, s in top if i not in skip][:k]

    def _top(self, index, name, q, k, allowed) -> list[tuple[int, float]]:
        return _filtered(self._require(index, name), q, k, allowed, self.overfetch)

    @staticmethod
    def _require(index: VectorIndex | None, name: str) -> VectorIndex:
        if index is None or index.count == 0:
            raise BadInputError(
                f"the {name} index is empty: register adapters or run `loradex reindex`",
                code="index_empty",
            )
        return index

    def _fuse(self, q: np.ndarray, text, weights, k: int) -> list[Hit]:
        t, w = dict(text), dict(weights)
        # why: the signals whose own top-k held the adapter; one that neither top k held (it
        # is second-best on both sides) is here by their sum: "text+weights".
        tops = (("text", {i for i, _ in text[:k]}), ("weights", {i for i, _ in weights[:k]}))
        why = {i: "+".join(n for n, top in tops if i in top) or "text+weights"
               for i in set(t) | set(w)}  # fmt: skip
        # A candidate one signal did not return is scored exactly on that side from its stored
        # vector, and one with no vector on a side (weights the encoder cannot read) by its
        # other side alone: every fused score is then a pure function of the query, not of k
        # (the last returned score of a list, the stand-in before, moved with the depth).
        assert self.text_index is not None and self.weight_index is not None  # hybrid has both
        t.update(self.text_index.scores_of(set(w) - set(t), q))
        w.update(self.weight_index.scores_of(set(t) - set(w), q))
        hits = []
        for i, reason in why.items():
            ts, ws = t.get(i), w.get(i)
            one = ts if ts is not None else ws  # every candidate has a vector on some side
            assert one is not None
            score = self.w_text * (one if ts is None else ts) + self.w_weights * (
                one if ws is None else ws
            )
            hits.append(Hit(i, float(score), ts, ws, reason))
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits[:k]


def _filtered(
    index: VectorIndex,
    q: np.ndarray,
    k: int,
    allowed: Collection[int] | None,
    overfetch: int,
) -> list[tuple[int, float]]:
    """Top-k (id, score) restricted to ``allowed``; over-fetch, widening until satisfied. A
    selective filter (few allowed ids) is scored exactly instead: widening an approximate
    search toward 1 % of 10^5 vectors costs more than a dot product with those vectors."""
    total = index.count
    # A set the caller already built (a server caches one per filter) is used as is: copying
    # 10^5 ids per query would cost more than the search.
    allowed_set = (
        allowed if allowed is None or isinstance(allowed, set | frozenset) else set(allowed)
    )
    if allowed_set is not None and len(allowed_set) <= max(EXACT_FILTER_MAX, total // 20):
        return _exact_among(index, q, k, allowed_set)
    want = min(k if allowed_set is None else k * overfetch, total)
    while True:
        scores, ids = index.search(q, max(want, 1))
        pairs = [
            (int(i), float(s))
            for i, s in zip(ids[0], scores[0], strict=True)
            if i >= 0 and (allowed_set is None or int(i) in allowed_set)
        ]
        if len(pairs) >= k or want >= total:
            return pairs[:k]
        want = min(want * 4, total)


def _exact_among(
    index: VectorIndex, q: np.ndarray, k: int, allowed: Collection[int]
) -> list[tuple[int, float]]:
    ids = [i for i in allowed if i in index]
    if not ids:
        return []
    scores = index.vectors(ids) @ np.asarray(q, np.float32).reshape(-1)  # (m, d) @ (d,)
    top = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[j]), float(scores[j])) for j in top]


def check_request(query: str, k: int, mode: str) -> None:
    """Validate a search request (query text, k, mode); raises a clear BadInputError."""
    check_query(query)
    check_k(k)
    if mode not in MODES:
        raise UnknownNameError(
            f"unknown search mode {mode!r}; known: {', '.join(MODES)}",
            code="unknown_mode",
            known=list(MODES),
        )


def check_query(query: str) -> None:
    if not isinstance(query, str) or not query.strip():
        raise BadInputError("empty search query", code="query_empty")
    if not any(_visible(c) for c in query):
        # "\u200b", "\x00" or undecodable bytes: the model would embed them as noise and
        # answer with arbitrary adapters
        raise BadInputError(
            "search query has no visible characters (only control, format or replacement "
            "characters)",
            code="query_empty",
        )
    if len(query) > MAX_QUERY_CHARS:
        raise BadInputError(
            f"search query has {len(query)} characters; the limit is {MAX_QUERY_CHARS} "
            "(describe the task in a sentence or two)",
            code="query_too_long",
            limit=MAX_QUERY_CHARS,
        )


def _visible(c: str) -> bool:
    """A letter, digit, punctuation mark or symbol; U+FFFD stands for bytes that were not
    text."""
    return unicodedata.category(c)[0] in "LNPS" and c != "\ufffd"


def check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadInputError(f"k must be an integer in 1..{MAX_K}, got {k!r}", code="bad_k")
