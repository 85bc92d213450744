"""SG-LoRA quality on the zoo (issue 7 quality bar): leave-one-task-out, one table.

For every held-out task T the SG-LoRA generator is retrained on the other 48 zoo adapters
(``loradex generator train --exclude T``: it never sees T's adapter or data), then five
adapters are scored on T's first ``--limit`` eval examples, prompted with descriptions[0]
(the zoo protocol):

- base: the base model alone;
- nearest: the single expert whose description is nearest to T's query (MiniLM cosine: the
  aggregator's top-1, i.e. description retrieval over the 48 experts);
- weighted: the softmax-weighted top-K average of the experts' updates in delta space, exact
  (PEFT ``cat`` of the weighted factors): the paper's "Top-K LoRA weighted" baseline, with the
  generator's own K, tau and weights;
- sg-lora: ``loradex generate-adapter`` (rank ``--rank``, ``--samples`` averaged samples);
- oracle: T's real adapter.

The query for T is descriptions[1] (a paraphrase the experts' cards never show; cards hold
descriptions[0]). Scoring: ``--scorer forced`` (default) decides greedy exact match by teacher
forcing in one forward pass (generation/forced_eval.py; ~10x cheaper on CPU, equal except for
alternative tokenizations of the same text), ``--scorer generate`` runs the real decoder.
Results are cached per (task, method) in ``--out`` so an interrupted run resumes.

    python benchmarks/generation.py [--limit 30] [--subset 12 | --tasks a,b] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import merging  # noqa: E402
from generation.evaluator import evaluate  # noqa: E402
from generation.forced_eval import forced_accuracy  # noqa: E402
from generation.tasks import load_task  # noqa: E402
from hub.config import Settings  # noqa: E402
from hub.core.names import AdapterRef  # noqa: E402
from hub.services.container import Container  # noqa: E402
from hub.services.zoo import import_zoo, read_manifest  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
METHODS = ["base", "nearest", "weighted", "sg-lora", "oracle"]
BASE = "smollm2-135m-instruct"


def family_round_robin(records: list[dict[str, Any]]) -> list[str]:
    """Tasks ordered so that any prefix covers the families evenly: the first task (by name) of
    every family, then the second of every family, ... (the documented subset order)."""
    families: dict[str, list[str]] = {}
    for r in sorted(records, key=lambda r: (r["family"], r["task"])):
        families.setdefault(r["family"], []).append(r["task"])
    order = []
    for i in range(max(len(v) for v in families.values())):
        order += [v[i] for _, v in sorted(families.items()) if i < len(v)]
    return order


def score(args, base, adapter, task) -> dict[str, float]:
    fn = forced_accuracy if args.scorer == "forced" else evaluate
    res = fn(base, adapter, task, limit=args.limit)
    nll = [o["nll"] for o in res.outputs if "nll" in o]
    return {
        "acc": res.accuracy,
        "n": res.n,
        "nll": float(np.mean(nll)) if nll else float("nan"),
        "seconds": round(res.seconds, 1),
    }


def fold_adapters(c: Container, args, record: dict[str, Any]) -> dict[str, Any]:
    """The five adapters of one held-out task (None for the base model)."""
    task = record["task"]
    t0 = time.perf_counter()
    settings = {"k": args.k, "tau": args.tau, "steps": args.steps, "seed": args.seed}
    c.generators.train(exclude=[task], settings=settings)
    out = c.generators.generate(
        record["descriptions"][1],
        name=f"sg.{task}",
        k=args.k,
        tau=args.tau,
        samples=args.samples,
        seed=args.seed,
        rank=args.rank,
    )
    load = c.registry.load
    experts = [load(AdapterRef(d.name, d.version)).adapter for d in out.drew_on]
    weighted = merging.merge(
        experts, [d.weight for d in out.drew_on], "cat", {}, device="cpu"
    ).adapter
    item = out.added.item
    return {
        "base": None,
        "nearest": experts[0],
        "weighted": weighted,
        "sg-lora": load(AdapterRef(item.name, item.version)).adapter,
        "oracle": load(AdapterRef(task)).adapter,
        "drew_on": [(d.name, round(d.weight, 3), round(d.similarity, 3)) for d in out.drew_on],
        "fold_seconds": round(time.perf_counter() - t0, 1),
    }


def run_task(c, args, base, record, cache: dict[str, Any]) -> None:
    task = record["task"]
    done = cache.setdefault(task, {})
    if all(m in done for m in METHODS):
        return
    adapters = fold_adapters(c, args, record)
    done["drew_on"] = adapters["drew_on"]
    task_obj = load_task(task, ZOO)
    for method in METHODS:
        if method not in done:
            done[method] = score(args, base, adapters[method], task_obj)
    load = os.getloadavg()[0]
    print(
        f"{task:>16}: "
        + " ".join(f"{m}={done[m]['acc']:.2f}" for m in METHODS)
        + f"  drew on {', '.join(f'{n}({w})' for n, w, _ in done['drew_on'])}"
        + f"  [fold {adapters['fold_seconds']} s, load {load:.1f}]",
        file=sys.stderr,
        flush=True,
    )


def check_scorer(c: Container, args, base, order: list[str]) -> None:
    """Forced vs real greedy decoding on the same examples: base model and real adapter."""
    agree = total = 0
    for task in order:
        task_obj = load_task(task, ZOO)
        for label, adapter in [
            ("base", None),
            ("oracle", c.registry.load(AdapterRef(task)).adapter),
        ]:
            f = forced_accuracy(base, adapter, task_obj, limit=args.limit).outputs
            g = evaluate(base, adapter, task_obj, limit=args.limit).outputs
            same = sum(a["correct"] == b["correct"] for a, b in zip(f, g, strict=True))
            agree, total = agree + same, total + len(f)
            print(
                f"{task:>16} {label:>6}: forced {sum(o['correct'] for o in f)}/{len(f)}, "
                f"greedy {sum(o['correct'] for o in g)}/{len(g)}, agree on {same}/{len(f)} "
                f"[load {os.getloadavg()[0]:.1f}]",
                flush=True,
            )
    print(f"scorer agreement: {agree}/{total} examples")


def table(cache: dict[str, Any], order: list[str]) -> list[str]:
    tasks = [t for t in order if t in cache and all(m in cache[t] for m in METHODS)]
    lines = [f"{'task':>16} | " + " | ".join(f"{m:>8}" for m in METHODS) + " | nearest expert"]
    for t in tasks:
        row = cache[t]
        lines.append(
            f"{t:>16} | "
            + " | ".join(f"{row[m]['acc']:>8.3f}" for m in METHODS)
            + f" | {row['drew_on'][0][0]}"
        )
    if not tasks:
        return lines
    mean = {m: float(np.mean([cache[t][m]["acc"] for t in tasks])) for m in METHODS}
    nll = {m: float(np.mean([cache[t][m]["nll"] for t in tasks])) for m in METHODS}
    lines.append(f"{'MEAN acc':>16} | " + " | ".join(f"{mean[m]:>8.3f}" for m in METHODS))
    lines.append(f"{'MEAN answer NLL':>16} | " + " | ".join(f"{nll[m]:>8.3f}" for m in METHODS))
    lines.append(f"tasks: {len(tasks)}")
    for other in ("base", "nearest", "weighted"):
        verdict = "MET" if mean["sg-lora"] > mean[other] else "NOT MET"
        lines.append(f"target sg-lora > {other} on the mean: {verdict}")
    hurt = [t for t in tasks if cache[t]["nearest"]["acc"] < cache[t]["base"]["acc"]]
    none = [
        t
        for t in tasks
        if max(cache[t]["nearest"]["acc"], cache[t]["weighted"]["acc"]) <= cache[t]["base"]["acc"]
    ]
    lines.append(f"no neighbour helps (nearest and weighted <= base): {', '.join(none) or '-'}")
    lines.append(f"nearest neighbour hurts (< base): {', '.join(hurt) or '-'}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--tasks", default=None, help="comma-separated task names")
    ap.add_argument("--subset", type=int, default=None, help="first N of the family order")
    ap.add_argument("--scorer", choices=["forced", "generate"], default="forced")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tau", type=float, default=0.05)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", type=Path, default=None, help="catalog dir (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="JSON cache of results (resumable)")
    ap.add_argument("--report", action="store_true", help="only print the table of --out")
    ap.add_argument(
        "--check-scorer", action="store_true", help="compare forced and greedy scoring only"
    )
    args = ap.parse_args()

    records = read_manifest(ZOO)["adapters"]
    order = family_round_robin(records)
    if args.tasks:
        order = [t for t in order if t in set(args.tasks.split(","))]
    elif args.subset:
        order = order[: args.subset]
    if args.report:
        cache = json.loads(args.out.read_text())
        print(f"config: {cache.get('_config')}; load average {os.getloadavg()[0]:.1f}")
        print("\n".join(table(cache, order)))
        return
    home = args.home or Path(tempfile.mkdtemp(prefix="loradex-genbench-"))
    cache_dir = os.environ.get("LORADEX_MODEL_CACHE_DIR")
    c = Container(Settings(home=home, model_cache_dir=Path(cache_dir) if cache_dir else None))
    c.init_home()
    import_zoo(c.registry, ZOO)
    base = c.models.load(BASE, "cpu")
    if args.check_scorer:
        check_scorer(c, args, base, order)
        return
    cache: dict[str, Any] = (
        json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    )
    skip = ("tasks", "subset", "out", "home", "report", "check_scorer")
    config = {k: str(v) for k, v in vars(args).items() if k not in skip}
    if cache.get("_config", config) != config:
        sys.exit(f"{args.out} holds results of another configuration: {cache['_config']}")
    cache["_config"] = config
    by_task = {r["task"]: r for r in records}
    print(f"config: {config}; tasks in order: {', '.join(order)}", file=sys.stderr)
    for task in order:
        run_task(c, args, base, by_task[task], cache)
        if args.out:
            args.out.write_text(json.dumps(cache, indent=1))
    print(
        f"\nleave-one-task-out, {args.scorer} exact match on the first {args.limit} eval "
        f"examples; query = descriptions[1]; k={args.k} tau={args.tau} rank={args.rank} "
        f"samples={args.samples}; load average {os.getloadavg()[0]:.1f}"
    )
    print("\n".join(table(cache, order)))


if __name__ == "__main__":
    main()
