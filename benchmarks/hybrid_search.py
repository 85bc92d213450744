"""Hybrid search: the exact fused top k (threshold algorithm) vs the best of each side's top k.

    .venv/bin/python benchmarks/hybrid_search.py [--sizes 10000,100000] [--queries 200]

Per catalog size, two indexes with the product's default backend (``INDEX_PARAMS``: flat below
20k, HNSW32 above): card vectors (benchmarks/search_speed.py's embedding-like recipe) and
weight vectors that follow them loosely, as a trained encoder's do (the card vector plus noise
of the same norm, re-normalised; their cosine with their own card is ~0.7). Queries are fresh
vectors of the same recipe. For k = 10, printed side by side from the same run:

- ``exact top k``: how often the returned ids are the brute-force top k of ``0.5 text + 0.5
  weights`` over every adapter (numpy, fp64), in order;
- ``missed``: mean number of true top-k adapters a query did not return;
- p50 / p99 single-query latency (ms, the query vector given: no text model).

Rows: ``SearchEngine`` (the product: lists read deeper until no unseen adapter can beat the
k-th), and the rule it replaced, the union of each side's own top k, fused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

from search_speed import embedding_like  # noqa: E402

from hub.services.search import INDEX_PARAMS  # noqa: E402
from retrieval.index import VectorIndex  # noqa: E402
from retrieval.search import SearchEngine, _filtered  # noqa: E402


def weight_like(cards: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(cards.shape)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x = cards + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def union_of_top_k(engine: SearchEngine, q: np.ndarray, k: int) -> list[int]:
    """The replaced rule: each side's own top k, fused (every candidate scored exactly)."""
    text = _filtered(engine.text_index, q, k, None, engine.overfetch)
    weights = _filtered(engine.weight_index, q, k, None, engine.overfetch)
    return [h.id for h in engine._fuse(q, text, weights, k)]


def bench(n: int, n_queries: int, k: int = 10) -> list[str]:
    cards = embedding_like(n, seed=1)
    weights = weight_like(cards, seed=2)
    queries = embedding_like(n_queries, seed=3)
    ids = np.arange(n)
    t0 = time.perf_counter()
    sides = []
    for name, x in (("text", cards), ("weights", weights)):
        index = VectorIndex(x.shape[1], name, **INDEX_PARAMS)
        index.add(ids, x)
        index.rebuild()  # the backend for the final size, as `reindex` leaves it
        sides.append(index)
    build = time.perf_counter() - t0
    truth = np.argsort(-(0.5 * cards.astype(np.float64) @ queries.T.astype(np.float64)
                         + 0.5 * weights.astype(np.float64) @ queries.T.astype(np.float64)),
                       axis=0, kind="stable")[:k].T  # fmt: skip
    lines = [f"n={n:,} (backend {sides[0].backend}, both indexes built in {build:.1f} s)"]
    rules = {
        "SearchEngine (exact fused top k)": lambda e, q: [h.id for h in e.search("q", k=k)],
        "union of each side's top k (replaced)": lambda e, q: union_of_top_k(e, q[None], k),
    }
    for name, rule in rules.items():
        times, exact, missed = [], 0, 0
        for qi, q in enumerate(queries):
            engine = SearchEngine(lambda _t, q=q: q, sides[0], sides[1])
            t0 = time.perf_counter()
            got = rule(engine, q)
            times.append((time.perf_counter() - t0) * 1e3)
            exact += got == truth[qi].tolist()
            missed += len(set(truth[qi].tolist()) - set(got))
        lat = np.array(times)
        lines.append(
            f"  {name:40s} exact top {k} {exact / n_queries:.3f}  missed {missed / n_queries:.2f}"
            f"  p50 {np.percentile(lat, 50):.2f} ms  p99 {np.percentile(lat, 99):.2f} ms"
            f"  (load {os.getloadavg()[0]:.1f})"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        print("\n".join(bench(n, args.queries)), flush=True)


if __name__ == "__main__":
    main()
