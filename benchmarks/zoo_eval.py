"""Zoo evaluation benchmark: re-measure every zoo adapter with loradex's evaluator.

For each adapter: read its PEFT directory, evaluate base + adapter on the task's eval split (the
zoo protocol: greedy, exact match, first ``--limit`` examples) and compare with the accuracy
recorded when the zoo was built (on all 200 examples). Prints a table, then the mean absolute
difference (target: <= 2 points on the full split) and seconds per adapter.

    python benchmarks/zoo_eval.py [--limit N] [--tasks a,b] [--device cpu|cuda]
                                  [--cache-dir DIR] [--zoo DIR] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.base_models import load_base_model  # noqa: E402
from generation.evaluator import evaluate  # noqa: E402
from generation.tasks import load_task  # noqa: E402
from storage.peft_format import read_peft_dir  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
BASE = "smollm2-135m-instruct"


def default_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "loradex" / "models"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="eval examples per task (default all)")
    ap.add_argument("--tasks", default="", help="comma-separated task names (default all)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cache-dir", type=Path, default=default_cache())
    ap.add_argument("--zoo", type=Path, default=ZOO)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = json.loads((args.zoo / "manifest.json").read_text())
    records = manifest["adapters"]
    wanted = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(wanted) - {r["task"] for r in records})
    if unknown:
        print(f"unknown tasks: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if wanted:
        records = [r for r in records if r["task"] in wanted]

    start = time.perf_counter()
    base = load_base_model(BASE, args.cache_dir, device=args.device)
    print(f"base {BASE} on {base.device} loaded in {time.perf_counter() - start:.1f}s")
    print(f"{'task':<18} {'recorded':>8} {'measured':>8} {'diff':>7} {'n':>4} {'seconds':>8}")
    diffs, seconds = [], []
    for rec in records:
        adapter = read_peft_dir(args.zoo / rec["adapter"]).adapter
        task = load_task(args.zoo / rec["task_file"])
        res = evaluate(base, adapter, task, limit=args.limit, batch_size=args.batch_size)
        diff = res.accuracy - rec["adapter_acc"]
        diffs.append(abs(diff))
        seconds.append(res.seconds)
        print(
            f"{rec['task']:<18} {rec['adapter_acc']:>8.3f} {res.accuracy:>8.3f} "
            f"{100 * diff:>+6.1f}p {res.n:>4} {res.seconds:>8.1f}",
            flush=True,
        )
    n = len(diffs)
    print(f"\nadapters: {n}, examples per task: {args.limit or 'all'}, device: {base.device}")
    print(f"mean |measured - recorded|: {100 * sum(diffs) / n:.2f} points (target <= 2)")
    print(f"seconds per adapter: {sum(seconds) / n:.1f} ({base.device.type})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
