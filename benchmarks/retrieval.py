"""Retrieval quality on the zoo (issue 4 quality bar); prints one table.

    .venv/bin/python benchmarks/retrieval.py [--zoo ../shared/zoo] [--folds 5] [--probes 128]
    .venv/bin/python benchmarks/retrieval.py --embedder minilm-int8   # the int8 text model

- text: cards hold descriptions[c], queries use another paraphrase q != c (all 6 ordered pairs);
  recall@1 of the product's card embedding (retrieval/cards.py, what `import-zoo` stores: name,
  one description, tags, 3 task examples) next to simpler renderings of the same card. The
  query paraphrase never appears in the card.
- weights: k-fold over tasks; the encoder never trains on the held-out fold's adapters; the
  query is each description of a held-out task, candidates are all 49 adapters embedded from
  their weights only. Recall@1/5/10 and MRR, next to chance and the least-squares baseline.
- similar: fraction of each adapter's 3 nearest weight-space neighbours in its family: the
  text-aligned encoder embedding, the product's `similar` vectors (standardised weight features
  in the training span, `WeightEncoder.feature_vectors`), the same held out by fold, chance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.cards import Card, CardEmbedder, name_words  # noqa: E402
from retrieval.embedders import get_embedder  # noqa: E402
from retrieval.weight_encoder import LeastSquaresMap, TrainConfig, train_encoder  # noqa: E402
from retrieval.weight_features import FeatureSpec, SlotLayout, adapter_features  # noqa: E402
from storage.peft_format import read_peft_dir  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"


def load_zoo(zoo: Path):
    records = json.loads((zoo / "manifest.json").read_text())["adapters"]
    adapters = [read_peft_dir(zoo / r["adapter"]).adapter for r in records]
    return records, adapters


def rank_stats(ranks: np.ndarray) -> dict[str, float]:
    return {
        "r@1": float((ranks <= 1).mean()),
        "r@5": float((ranks <= 5).mean()),
        "r@10": float((ranks <= 10).mean()),
        "mrr": float((1.0 / ranks).mean()),
    }


def chance(n: int) -> dict[str, float]:
    return {
        "r@1": 1 / n,
        "r@5": 5 / n,
        "r@10": 10 / n,
        "mrr": float(np.mean(1 / np.arange(1, n + 1))),
    }


def ranks_of(cands: np.ndarray, queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of candidate targets[i] for query i (ties count against it)."""
    scores = queries @ cands.T  # (q, n)
    own = scores[np.arange(len(queries)), targets]
    return (scores >= own[:, None]).sum(1)


PAIRS = [(c, q) for c in range(3) for q in range(3) if c != q]


def zoo_card(record: dict, card_i: int, zoo: Path, with_description: bool = True) -> Card:
    """The card `import-zoo` registers, holding only paraphrase ``card_i``."""
    task = json.loads((zoo / record["task_file"]).read_text())
    return Card.of(
        record["task"],
        record["descriptions"][card_i] if with_description else "",
        [record["family"], "zoo"],
        task["train"][:3],
    )


def text_mode(records, embedder, zoo: Path) -> dict[str, list[float]]:
    """recall@1 per (card paraphrase, query paraphrase) pair, for several card renderings."""
    cards = CardEmbedder(embedder)
    renderings = {
        "description only": lambda r, c: embedder.embed([x["descriptions"][c] for x in r]),
        "one string: description. name": lambda r, c: embedder.embed(
            [f"{x['descriptions'][c]}. {name_words(x['task'])}" for x in r]
        ),
        "product card (fields fused)": lambda r, c: cards.embed([zoo_card(x, c, zoo) for x in r]),
        "product card, no description": lambda r, c: cards.embed(
            [zoo_card(x, c, zoo, with_description=False) for x in r]
        ),
    }
    out: dict[str, list[float]] = {}
    targets = np.arange(len(records))
    for name, render in renderings.items():
        out[name] = []
        for card_i, query_i in PAIRS:
            vecs = render(records, card_i)
            queries = embedder.embed([r["descriptions"][query_i] for r in records])
            out[name].append(rank_stats(ranks_of(vecs, queries, targets))["r@1"])
    return out


def weight_mode(adapters, texts, folds, spec, cfg, embedder_id):
    """Encoder and least-squares baseline, k-fold by task; returns (enc ranks, lsq ranks)."""
    n = len(adapters)
    layout = SlotLayout.from_adapters(list(adapters))
    feats = np.stack([adapter_features(a, layout, spec).flat() for a in adapters])
    enc_ranks, lsq_ranks, train_s, fold_only = [], [], [], []
    for fold in folds:
        train = np.setdiff1d(np.arange(n), fold)
        t0 = time.perf_counter()
        enc, _ = train_encoder(
            [adapters[i] for i in train],
            [texts[i] for i in train],
            embedder_id,
            spec,
            cfg,
            layout=layout,
        )
        train_s.append(time.perf_counter() - t0)
        cand_enc = enc.embed_features(feats)  # all n adapters, from weights only
        lsq = LeastSquaresMap().fit(feats[train], _mean_text(texts, train))
        cand_lsq = lsq.transform(feats)
        q = np.concatenate([texts[i] for i in fold])  # every paraphrase of held-out tasks
        tgt = np.repeat(fold, [len(texts[i]) for i in fold])
        enc_ranks.append(ranks_of(cand_enc, q, tgt))
        lsq_ranks.append(ranks_of(cand_lsq, q, tgt))
        # discrimination among unseen adapters only (no "never trained on" hubness effect)
        local = np.searchsorted(fold, tgt)
        fold_only.append((ranks_of(cand_enc[fold], q, local), ranks_of(cand_lsq[fold], q, local)))
    extra = {
        "enc_fold": np.concatenate([a for a, _ in fold_only]),
        "lsq_fold": np.concatenate([b for _, b in fold_only]),
        "fold_size": float(np.mean([len(f) for f in folds])),
    }
    return np.concatenate(enc_ranks), np.concatenate(lsq_ranks), float(np.mean(train_s)), extra


def _mean_text(texts, idx) -> np.ndarray:
    m = np.stack([texts[i].mean(0) for i in idx])
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def similar_mode(vecs: np.ndarray, families: np.ndarray, k: int = 3) -> float:
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    nn = np.argsort(-sims, axis=1)[:, :k]
    return float((families[nn] == families[:, None]).mean())


def similar_held_out(adapters, texts, folds, families, spec, cfg, embedder_id) -> float:
    """`similar` for adapters the encoder never saw: per fold, train on the rest, embed all
    49 with ``feature_vectors``, score the held-out adapters' 3 nearest neighbours."""
    layout = SlotLayout.from_adapters(list(adapters))
    scores = []
    for fold in folds:
        train = np.setdiff1d(np.arange(len(adapters)), fold)
        enc, _ = train_encoder(
            [adapters[i] for i in train],
            [texts[i] for i in train],
            embedder_id,
            spec,
            cfg,
            layout=layout,
        )
        vecs = enc.feature_vectors(adapters)
        sims = vecs @ vecs.T
        np.fill_diagonal(sims, -np.inf)
        nn = np.argsort(-sims, axis=1)[:, :3]
        scores.append((families[nn] == families[:, None])[fold].mean(1))
    return float(np.concatenate(scores).mean())


def similar_chance(families: np.ndarray) -> float:
    _, counts = np.unique(families, return_counts=True)
    return float(sum(c * (c - 1) for c in counts) / (len(families) * (len(families) - 1)))


def agreement_with_minilm(embedder, records) -> str:
    """For another text model (``--embedder minilm-int8``): its vectors' cosine to ``minilm``'s
    on the zoo's descriptions, and, for int8, how far padded batches of 64 would move a text's
    vector from its vector alone (why ``minilm-int8`` runs one text at a time)."""
    from retrieval.onnx_minilm import OnnxMiniLM

    texts = [d for r in records for d in r["descriptions"]]
    ours = embedder.embed(texts)
    cosines = (ours * get_embedder("minilm").embed(texts)).sum(1)
    line = f"vectors vs minilm's, {len(texts)} descriptions: cosine mean {cosines.mean():.4f}, "
    line += f"min {cosines.min():.4f}"
    runner = getattr(embedder, "_onnx", None)
    if isinstance(runner, OnnxMiniLM) and runner.run_size == 1:
        batched = OnnxMiniLM(runner.graph, runner.tokenize, workers=1, run_size=64).embed(texts)
        drift = (ours * batched).sum(1).min()
        line += f"; in padded batches of 64 vs alone: cosine min {drift:.4f}"
    return line


def task_folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(perm[i::k]) for i in range(k)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", type=Path, default=ZOO)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--probes", type=int, default=FeatureSpec().n_probes)
    ap.add_argument("--features", default="in,out", help="comma list of sv,in,out")
    ap.add_argument("--hidden", type=int, default=TrainConfig().hidden)
    ap.add_argument("--steps", type=int, default=TrainConfig().steps)
    ap.add_argument("--embedder", default="minilm", help="minilm or minilm-int8")
    args = ap.parse_args()
    use = set(args.features.split(","))
    spec = FeatureSpec(
        n_probes=args.probes, use_sv="sv" in use, use_in="in" in use, use_out="out" in use
    )
    cfg = TrainConfig(hidden=args.hidden, steps=args.steps)

    records, adapters = load_zoo(args.zoo)
    families = np.array([r["family"] for r in records])
    embedder = get_embedder(args.embedder)
    texts = [embedder.embed(r["descriptions"]) for r in records]  # 3 x (384,) per task
    n = len(records)

    text = text_mode(records, embedder, args.zoo)
    folds = task_folds(n, args.folds)
    enc_r, lsq_r, train_s, extra = weight_mode(
        adapters, texts, folds, spec, cfg, embedder.embedder_id
    )
    full, losses = train_encoder(adapters, texts, embedder.embedder_id, spec, cfg)
    sim_enc = similar_mode(full.embed_many(adapters), families)
    sim_feat = similar_mode(full.feature_vectors(adapters), families)
    sim_held = similar_held_out(adapters, texts, folds, families, spec, cfg, embedder.embedder_id)

    print(
        f"zoo: {n} adapters, text embedder {embedder.embedder_id}, {args.folds}-fold by task, "
        f"features={sorted(use)} "
        f"probes={args.probes} hidden={args.hidden} steps={args.steps}"
    )
    pairs = " ".join(f"c{c}q{q}" for c, q in PAIRS)
    print(f"{'text mode, recall@1 (card paraphrase c, query q)':44s} {'mean':>6s}  {pairs}")
    for name, r1s in text.items():
        print(f"{'text, ' + name:44s} {np.mean(r1s):6.3f}  " + " ".join(f"{x:4.2f}" for x in r1s))
    print(f"{'text, chance':44s} {1 / n:6.3f}")
    print(f"{'mode':44s} {'r@1':>6s} {'r@5':>6s} {'r@10':>6s} {'MRR':>6s}")
    rows = [
        ("weights: encoder (InfoNCE), held-out tasks", rank_stats(enc_r)),
        ("weights: least-squares baseline", rank_stats(lsq_r)),
        (f"weights: chance (1 of {n})", chance(n)),
    ]
    m = extra["fold_size"]
    rows += [
        ("  encoder, candidates = held-out fold only", rank_stats(extra["enc_fold"])),
        ("  baseline, held-out fold only", rank_stats(extra["lsq_fold"])),
        (f"  chance (1 of ~{m:.0f})", chance(int(round(m)))),
    ]
    for name, s in rows:
        print(f"{name:44s} {s['r@1']:6.3f} {s['r@5']:6.3f} {s['r@10']:6.3f} {s['mrr']:6.3f}")
    print(f"{'similar@3 same family: encoder embedding':44s} {sim_enc:6.3f}")
    print(f"{'similar@3 same family: weight features (product)':44s} {sim_feat:6.3f}")
    print(f"{'  same, held-out fold, span of the rest':44s} {sim_held:6.3f}")
    print(f"{'similar@3 same family: chance':44s} {similar_chance(families):6.3f}")
    if args.embedder != "minilm":
        print(agreement_with_minilm(embedder, records))
    print(
        f"encoder train time per fold {train_s:.1f}s; full-zoo loss {losses[0]:.3f} -> "
        f"{losses[-1]:.3f}; version {full.version}"
    )


if __name__ == "__main__":
    main()
