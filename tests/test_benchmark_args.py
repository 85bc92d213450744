"""Benchmark options that are refused by name before any model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120
    )


def test_transfer_refuses_an_unknown_skip_column():
    out = _run("transfer.py", "--skip", "upper,teacher")
    assert out.returncode == 2
    assert "--skip takes no-filter, upper, not teacher" in out.stderr


def test_merge_quality_refuses_a_negative_bootstrap_count():
    out = _run("merge_quality.py", "--bootstrap", "-3")
    assert out.returncode == 2
    assert "--bootstrap takes a replicate count >= 0" in out.stderr
