"""Does adding the weight embedding to the text score (hybrid search) find the right adapter
more often than the text card alone? Zoo scenarios, fusion rules side by side; nothing tuned.

    .venv/bin/python benchmarks/retrieval_fusion.py [--folds 5]

Protocol as in ``benchmarks/retrieval.py``: cards hold paraphrase c, queries use q != c (the 6
ordered pairs), all 49 adapters are candidates. The weight encoder is trained the way
``loradex encoder train`` trains it on such a catalog: on the descriptions the catalog holds
(paraphrase c only) of the adapters that have one. Scenarios:

- every adapter described (the encoder saw every adapter with its card description);
- no descriptions, names kept: cards are name + tags + 3 examples; weight embeddings k-fold
  (each adapter embedded by an encoder trained on the other folds' described adapters: a
  catalog with no descriptions has nothing to train on, so this stands in for an encoder
  trained on another catalog; the five fold encoders' vectors share one candidate list);
- no descriptions, opaque names (``lora_007``): cards are tags + examples only; k-fold weights;
- half described (two complementary halves, each in turn), the rest with names kept / opaque;
  the encoder trains on the described half and embeds all.

Rules: text alone, weights alone, the product's hybrid (``0.5 text + 0.5 weights``, cosines),
z-scored sum (each signal standardised over the candidates per query) and reciprocal-rank
fusion (``1/(60 + rank)`` summed, the usual constant).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.cards import Card, CardEmbedder  # noqa: E402
from retrieval.embedders import MiniLMEmbedder  # noqa: E402
from retrieval.weight_encoder import TrainConfig, train_encoder  # noqa: E402
from retrieval.weight_features import FeatureSpec, SlotLayout  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "retrieval_bench", Path(__file__).with_name("retrieval.py")
)
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _z(s: np.ndarray) -> np.ndarray:
    return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)


def _rank(s: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(-s, 1, kind="stable"), 1) + 1


Rule = Callable[[np.ndarray, np.ndarray], np.ndarray]
RULES: dict[str, Rule] = {
    "text": lambda t, w: t,
    "weights": lambda t, w: w,
    "hybrid 0.5/0.5": lambda t, w: 0.5 * t + 0.5 * w,
    "z-score sum": lambda t, w: _z(t) + _z(w),
    "RRF (60)": lambda t, w: 1 / (60 + _rank(t)) + 1 / (60 + _rank(w)),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    records, adapters = bench.load_zoo(bench.ZOO)
    n = len(records)
    embedder = MiniLMEmbedder()
    cards = CardEmbedder(embedder)
    texts = [embedder.embed(r["descriptions"]) for r in records]
    layout = SlotLayout.from_adapters(list(adapters))
    folds = bench.task_folds(n, args.folds)
    examples = [json.loads((bench.ZOO / r["task_file"]).read_text())["train"][:3] for r in records]

    def encoder_on(idx: np.ndarray, c: int):
        """The encoder `loradex encoder train` makes from these adapters' card descriptions."""
        return train_encoder(
            [adapters[i] for i in idx],
            [texts[i][c : c + 1] for i in idx],
            embedder.embedder_id,
            FeatureSpec(),
            TrainConfig(),
            layout=layout,
        )[0]

    ranks: dict[str, dict[str, list[np.ndarray]]] = {}

    def score(scenario: str, t: np.ndarray, w: np.ndarray) -> None:
        for name, rule in RULES.items():
            r = bench.ranks_of(np.eye(n), rule(t, w), np.arange(n))  # rank of the own column
            ranks.setdefault(scenario, {}).setdefault(name, []).append(r)

    for c in range(3):
        described = cards.embed([bench.zoo_card(r, c, bench.ZOO) for r in records])
        named = cards.embed([bench.zoo_card(r, c, bench.ZOO, False) for r in records])
        opaque = cards.embed(
            [
                Card.of(f"lora_{i:03d}", "", [r["family"], "zoo"], examples[i])
                for i, r in enumerate(records)
            ]
        )
        seen_all = encoder_on(np.arange(n), c).embed_many(adapters)
        held_out = np.zeros((n, embedder.dim), np.float32)
        for fold in folds:
            enc = encoder_on(np.setdiff1d(np.arange(n), fold), c)
            held_out[fold] = enc.embed_many([adapters[i] for i in fold])
        perm = np.random.default_rng(100 + c).permutation(n)
        halves = []
        for half in (perm[: n // 2], perm[n // 2 :]):
            mask = np.zeros(n, bool)
            mask[half] = True
            halves.append((mask, encoder_on(half, c).embed_many(adapters)))
        for q in range(3):
            if q == c:
                continue
            queries = np.stack([t[q] for t in texts])
            score("every adapter described", queries @ described.T, queries @ seen_all.T)
            score("no descriptions, names kept", queries @ named.T, queries @ held_out.T)
            score("no descriptions, opaque names", queries @ opaque.T, queries @ held_out.T)
            for mask, vecs in halves:
                for label, rest in (("names kept", named), ("opaque", opaque)):
                    mixed = np.where(mask[:, None], described, rest)
                    score(f"half described, rest {label}", queries @ mixed.T, queries @ vecs.T)
        print(f"card paraphrase {c} done", file=sys.stderr, flush=True)

    print(f"zoo: {n} adapters; r@1 / r@5 / MRR per rule (chance r@1 {1 / n:.3f})")
    print(f"{'scenario':34s} " + " ".join(f"{r:>18s}" for r in RULES))
    for scenario, by_rule in ranks.items():
        cells = []
        for rule in RULES:
            s = bench.rank_stats(np.concatenate(by_rule[rule]))
            cells.append(f"{s['r@1']:.3f}/{s['r@5']:.3f}/{s['mrr']:.3f}")
        print(f"{scenario:34s} " + " ".join(f"{x:>18s}" for x in cells))


if __name__ == "__main__":
    main()
