"""Merge quality on the zoo: every method side by side on fixed groups of 2, 4 and 8 adapters.

For each group and method the merged adapter is evaluated on every member's task (zoo protocol,
greedy exact match, first ``--limit`` eval examples); normalized accuracy = merged accuracy /
the member's own accuracy measured on the same examples, averaged over members. All methods run
at the same output rank (the members' rank, 4) except `cat`, which keeps every rank (sum) and is
the exact task-arithmetic reference. RMM (n = 8): the basis is the largest whose artifact stores
<= 60% of the separate adapters' numbers; each member is reverted and evaluated on its own task.

Targets (issue #5): LEGO >= the best PEFT-style method at the same output rank on the 4- and
8-groups; RMM reverted members keep >= 95% of individual accuracy at <= 60% storage.

    python benchmarks/merge_quality.py [--limit 50] [--device auto] [--methods ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import merging  # noqa: E402
from generation.base_models import load_base_model  # noqa: E402
from generation.evaluator import evaluate  # noqa: E402
from generation.tasks import load_task  # noqa: E402
from merging.methods.rmm import storage_params  # noqa: E402
from storage.peft_format import read_peft_dir  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
# All rank 4 (so the factor-wise PEFT methods apply), individually at 1.0, across families.
GROUPS = {
    2: ["sentiment", "french_color"],
    4: ["sentiment", "french_color", "json_name", "remove_vowels"],
    8: [
        "sentiment",
        "french_color",
        "json_name",
        "remove_vowels",
        "number_to_words",
        "last_word",
        "has_digit",
        "plural",
    ],
}
RANK = 4
METHODS = {
    # name: (method, params) at output rank 4 unless noted
    "cat (rank sum)": ("cat", {}),
    "linear": ("linear", {}),
    "svd": ("svd", {"rank": RANK}),
    "ties d=0.5": ("ties", {"density": 0.5}),
    "dare_ties d=0.5": ("dare_ties", {"density": 0.5}),
    "magnitude_prune d=0.5": ("magnitude_prune", {"density": 0.5}),
    "ties_svd d=0.5": ("ties_svd", {"density": 0.5, "rank": RANK}),
    "lego k=4": ("lego", {"rank": RANK}),
}
PEFT_STYLE_SAME_RANK = [
    "linear",
    "svd",
    "ties d=0.5",
    "dare_ties d=0.5",
    "magnitude_prune d=0.5",
    "ties_svd d=0.5",
]


def accuracy(base, adapter, task, limit: int) -> float:
    return evaluate(base, adapter, task, limit=limit).accuracy


def rmm_storage_ratio(adapters, p: int) -> float:
    n = len(adapters)
    stored = separate = 0
    for name, module in adapters[0].modules.items():
        d_out, d_in = module.out_features, module.in_features
        r = max(a.modules[name].rank for a in adapters)
        stored += storage_params(d_out, d_in, r, n, p)
        separate += sum(a.modules[name].num_parameters for a in adapters)
    return stored / separate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--groups", default="2,4,8")
    ap.add_argument(
        "--weights",
        choices=["mean", "sum"],
        default="mean",
        help="mean: each member 1/n (averaging); sum: each 1 (task arithmetic)",
    )
    args = ap.parse_args()
    cache = Path(tempfile.gettempdir()) / "loradex-model-cache"
    base = load_base_model("smollm2-135m-instruct", cache, args.device)
    tasks = {t: load_task(t, ZOO) for g in GROUPS.values() for t in g}
    adapters = {t: read_peft_dir(ZOO / "adapters" / t).adapter for t in tasks}
    own = {t: accuracy(base, adapters[t], tasks[t], args.limit) for t in tasks}
    print(
        "individual accuracy on the same examples:",
        " ".join(f"{t}={a:.2f}" for t, a in own.items()),
    )

    table: dict[str, dict[int, float]] = {}
    for label in args.methods.split(","):
        method, params = METHODS[label]
        for size in map(int, args.groups.split(",")):
            members = GROUPS[size]
            t0 = time.perf_counter()
            merged = merging.merge(
                [adapters[t] for t in members],
                [1.0 if args.weights == "sum" else 1.0 / size] * size,
                method,
                params,
                device=args.device,
                seed=0,
            ).adapter
            norm = [
                accuracy(base, merged, tasks[t], args.limit) / max(own[t], 1e-9) for t in members
            ]
            table.setdefault(label, {})[size] = sum(norm) / len(norm)
            print(
                f"{label:>22} n={size}: normalized {table[label][size]:.3f} "
                f"({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
            )

    sizes = list(map(int, args.groups.split(",")))
    print(
        "\nnormalized accuracy (merged / individual), mean over member tasks, "
        f"{args.limit} eval examples each, weights: {args.weights}"
    )
    print(f"{'method':>22} | " + " | ".join(f"n={s:<4}" for s in sizes))
    for label, row in table.items():
        print(f"{label:>22} | " + " | ".join(f"{row[s]:.3f} " for s in sizes))
    if "lego k=4" in table:
        for s in (4, 8):
            if s not in sizes:
                continue
            best = max((table[m][s], m) for m in PEFT_STYLE_SAME_RANK if m in table)
            verdict = "MET" if table["lego k=4"][s] >= best[0] else "NOT MET"
            print(
                f"target LEGO >= best PEFT-style at rank {RANK}, n={s}: {verdict} "
                f"(lego {table['lego k=4'][s]:.3f} vs {best[1]} {best[0]:.3f})"
            )

    members = GROUPS[8]
    group = [adapters[t] for t in members]
    p = max(q for q in range(0, RANK + 1) if rmm_storage_ratio(group, q) <= 0.6)
    result = merging.merge(group, [1.0] * 8, "rmm", {"basis": p}, device=args.device, names=members)
    kept = []
    for t in members:
        back = merging.revert(result.artifact, t)
        kept.append(accuracy(base, back, tasks[t], args.limit) / max(own[t], 1e-9))
    retained = sum(kept) / len(kept)
    ratio = rmm_storage_ratio(group, p)
    print(
        f"\nRMM n=8 basis p={p}: storage {ratio:.1%} of separate adapters, reverted members "
        f"retain {retained:.3f} of individual accuracy "
        f"({' '.join(f'{t}={k:.2f}' for t, k in zip(members, kept, strict=True))})"
    )
    verdict = "MET" if retained >= 0.95 and ratio <= 0.6 else "NOT MET"
    print(f"target RMM >= 0.95 retained at <= 60% storage: {verdict}")


if __name__ == "__main__":
    main()
