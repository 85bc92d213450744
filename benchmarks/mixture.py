"""X-LoRA mixtures vs their experts and vs static merges of the same adapters, on the zoo.

Everything goes through the services, as a user would: a fresh catalog, ``import-zoo``, the merge
service for the static merges, the mixture service for the gate, the model service's evaluator
(zoo protocol: greedy, exact match, first ``--limit`` eval examples of each task).

Groups: the 4- and 8-adapter groups of ``merge_quality.py`` (rank 4, spanning all six families).
Per member task: the expert alone (oracle routing), the mixture, and the best static merge of the
group (the method with the best mean accuracy over the group's tasks). Targets (issue 6): mixture
>= 90% of the expert on every task, and above the best static merge on average.

    python benchmarks/mixture.py [--limit 50] [--groups 4,8] [--objective route] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # after the repo: merge_quality.py

from merge_quality import GROUPS as MERGE_GROUPS  # noqa: E402

from hub.config import Settings  # noqa: E402
from hub.core.names import AdapterRef  # noqa: E402
from hub.services.container import Container  # noqa: E402
from hub.services.mixture import GateOptions  # noqa: E402
from hub.services.zoo import import_zoo  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
# The merging benchmark's groups of 4 and 8: both tables speak of the same adapters.
GROUPS = {n: MERGE_GROUPS[n] for n in (4, 8)}
# label: (method, params, weight per member: "mean" = 1/n, "sum" = 1)
STATIC = {
    "cat mean": ("cat", {}, "mean"),
    "cat sum": ("cat", {}, "sum"),
    "ties d=0.5": ("ties", {"density": 0.5}, "sum"),
}


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


class Bench:
    def __init__(self, container: Container, limit: int) -> None:
        self.c, self.limit = container, limit
        self._memo: dict[tuple[str, str], float] = {}

    def acc(self, adapter: str, task: str) -> float:
        key = (adapter, task)
        if key not in self._memo:
            t0 = time.perf_counter()
            out = self.c.models.evaluate(AdapterRef.parse(adapter), task, limit=self.limit)
            self._memo[key] = out.accuracy
            print(f"  eval {adapter:>28} on {task:<16} {out.accuracy:.3f} "
                  f"({time.perf_counter() - t0:.0f} s, {load()})", file=sys.stderr)  # fmt: skip
        return self._memo[key]

    def static(
        self, size: int, members: list[str], labels: list[str]
    ) -> tuple[str, dict[str, float]]:
        best: tuple[float, str, dict[str, float]] = (-1.0, "", {})
        for label in labels:
            method, params, weighting = STATIC[label]
            name = f"g{size}-{label.replace(' ', '-').replace('=', '')}"
            weight = 1.0 / size if weighting == "mean" else 1.0
            self.c.merges.merge(
                [AdapterRef(t) for t in members], method=method, name=name, params=params,
                weights=[weight] * size,
            )  # fmt: skip
            scores = {t: self.acc(name, t) for t in members}
            mean = sum(scores.values()) / size
            print(f"  static {label}: mean {mean:.3f}", file=sys.stderr)
            best = max(best, (mean, label, scores))
        return best[1], best[2]

    def mixture(self, size: int, members: list[str], options: GateOptions) -> tuple[dict, dict]:
        t0 = time.perf_counter()
        out = self.c.mixtures.mix(
            [AdapterRef(t) for t in members], name=f"mix{size}", options=options
        )
        wall = time.perf_counter() - t0
        report = {**out.report, "wall": wall, "load": load()}
        print(f"  mixture n={size}: {report}", file=sys.stderr)
        return {t: self.acc(f"mix{size}", t) for t in members}, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=50, help="eval examples per task")
    ap.add_argument("--groups", default="4,8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--objective", default="route", choices=["route", "lm"])
    ap.add_argument("--routing", default="prompt", choices=["prompt", "token"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--examples", type=int, default=32, help="per expert (route)")
    ap.add_argument("--batch", type=int, default=8, help="per step (lm)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--static", default=",".join(STATIC), help=f"of: {', '.join(STATIC)}")
    ap.add_argument("--home", type=Path, default=None, help="catalog dir (default: a temp dir)")
    args = ap.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="loradex-mixture-bench-"))
    cache = os.environ.get("LORADEX_MODEL_CACHE_DIR")
    settings = Settings(home=home, zoo_dir=ZOO, model_cache_dir=Path(cache) if cache else None)
    c = Container(settings)
    c.init_home()
    import_zoo(c.registry, ZOO)
    c.models.prepare("smollm2-135m-instruct")
    options = GateOptions(
        objective=args.objective, routing=args.routing, steps=args.steps,
        examples=args.examples, batch=args.batch, lr=args.lr,
    )  # fmt: skip
    bench = Bench(c, args.limit)
    print(f"# {platform.node()} {os.cpu_count()} cpus, device {args.device}, {load()}")
    print(f"# gate: {options}")
    for size in map(int, args.groups.split(",")):
        members = GROUPS[size]
        experts = {t: bench.acc(t, t) for t in members}
        mixed, report = bench.mixture(size, members, options)
        label, static = bench.static(size, members, args.static.split(","))
        print(table(size, members, experts, mixed, label, static, report), flush=True)


def table(size, members, experts, mixed, label, static, report) -> str:  # noqa: ANN001
    lines = [
        f"\n## n={size}: {', '.join(members)}",
        f"gate training: {report['seconds']:.1f} s on {report.get('device', 'cpu')} "
        f"({report['examples']} examples, {report['gate_parameters']:,} parameters; "
        f"mix() wall {report['wall']:.1f} s; {report['load']})",
        f"| task | expert alone | mixture | mixture/expert | best static ({label}) |",
        "| --- | --- | --- | --- | --- |",
    ]
    ratios = []
    for t in members:
        ratio = mixed[t] / experts[t] if experts[t] else float("nan")
        ratios.append(ratio)
        lines.append(f"| {t} | {experts[t]:.3f} | {mixed[t]:.3f} | {ratio:.3f} | {static[t]:.3f} |")
    mean = {k: sum(v.values()) / len(v) for k, v in (("e", experts), ("m", mixed), ("s", static))}
    lines.append(f"| **mean** | {mean['e']:.3f} | {mean['m']:.3f} | | {mean['s']:.3f} |")
    ok_each = all(r >= 0.9 for r in ratios)
    lines.append(
        f"target mixture >= 0.9 x expert on every task: {'MET' if ok_each else 'NOT MET'} "
        f"(min ratio {min(ratios):.3f}); mixture above best static on average: "
        f"{'MET' if mean['m'] > mean['s'] else 'NOT MET'} ({mean['m']:.3f} vs {mean['s']:.3f})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
