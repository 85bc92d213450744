"""How long one `loradex search` takes from the shell, and its peak memory: MiniLM on ONNX
Runtime vs on torch (the baseline), the same catalog, in the same run.

    .venv/bin/python benchmarks/cli_latency.py [--runs 5] [--zoo ../shared/zoo]

Imports the zoo into a temp data dir (`loradex import-zoo`), makes sure the ONNX export is
cached (the one-off ~10 s is not a search's cost), then runs `loradex search "QUERY" --k 3` as a
fresh process `--runs` times per backend (LORADEX_TEXT_EMBEDDER_BACKEND), alternating, and
prints the median and min wall time and the largest peak RSS (the child's ru_maxrss).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ZOO = ROOT.parent / "shared" / "zoo"
QUERY = "flip the order of the words in a sentence"


def loradex(home: Path, *args: str, backend: str | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB of this child, stdout) of one CLI process."""
    env = {**os.environ}
    if backend:
        env["LORADEX_TEXT_EMBEDDER_BACKEND"] = backend
    script = (
        "import resource, sys\nfrom hub.cli import main\n"
        f"sys.argv = ['loradex', '--data-dir', {str(home)!r}, *{list(args)!r}]\n"
        "try:\n    main()\nfinally:\n"
        "    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    print(f'__RSS_KB {rss}', file=sys.stderr)\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"loradex {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    rss_kb = int(proc.stderr.rsplit("__RSS_KB ", 1)[1].split()[0])
    return wall, rss_kb // 1024, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--zoo", type=Path, default=ZOO)
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    with tempfile.TemporaryDirectory(prefix="loradex-cli-") as tmp:
        home = Path(tmp) / "home"
        loradex(home, "import-zoo", str(args.zoo))
        from retrieval.embedders import MiniLMEmbedder

        MiniLMEmbedder(backend="onnx").embed(["cache the export"])
        results: dict[str, list[tuple[float, int]]] = {"torch": [], "onnx": []}
        first = ""
        for _ in range(args.runs):
            for backend in results:  # alternating, so drift in load hits both alike
                wall, rss, out = loradex(home, "search", QUERY, "--k", "3", backend=backend)
                results[backend].append((wall, rss))
                first = first or out.splitlines()[0]
        print(f"`loradex search` on the zoo ({first.strip()}), {args.runs} runs each, ", end="")
        print("load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
        for backend, rows in results.items():
            walls = [w for w, _ in rows]
            print(
                f"  {backend:>5}: median {statistics.median(walls):.2f} s, min {min(walls):.2f} s,"
                f" peak RSS {max(r for _, r in rows)} MB"
            )
        ratio = statistics.median(w for w, _ in results["torch"]) / statistics.median(
            w for w, _ in results["onnx"]
        )
        print(f"  onnx vs torch: {ratio:.1f}x sooner")


if __name__ == "__main__":
    main()
