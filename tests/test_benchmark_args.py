"""Benchmark options that are refused by name before any model loads."""

from __future__ import annotations

import importlib.util
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


def test_merge_speed_prints_end_to_end_and_resident_times_next_to_peft():
    """A tiny shape through the whole script: the resident column is measured, its error
    equals the end-to-end merge's (else the row says so), and PEFT runs beside it."""
    out = _run(
        "merge_speed.py", "--shape", "reduced", "--layers", "1", "--n", "3", "--rank", "4",
        "--methods", "svd,cat", "--peft-layers", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith(("| svd ", "| cat "))]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) > 0  # resident s
        assert float(cells[5]) < 1e-5  # rel err vs fp64
        assert cells[10].endswith("x")  # PEFT speed-up column filled
        assert "resident rel err" not in row
    assert "# resident: inputs staged on cpu" in out.stdout


def test_embedder_speed_reports_sentences_per_second_from_a_model_dir(tmp_path):
    import shutil

    from retrieval.embedders import minilm_model_dir

    copy = tmp_path / "minilm"
    shutil.copytree(minilm_model_dir(), copy)  # the --model-dir path the GPU machine uses
    out = _run("embedder_speed.py", "--sentences", "8", "--model-dir", str(copy))
    assert out.returncode == 0, out.stderr
    rates = [ln for ln in out.stdout.splitlines() if "sentences/s;" in ln]
    assert rates and all(float(ln.split(": ")[1].split()[0].replace(",", "")) > 0 for ln in rates)
    assert any(ln.startswith("minilm on torch, CPU") for ln in rates)
    if importlib.util.find_spec("onnxruntime"):  # the same model dir on ONNX Runtime, and ratios
        assert any(ln.startswith("minilm on onnx, CPU") for ln in rates)
        assert any(ln.startswith("minilm-int8 on onnx, CPU") for ln in rates)
        ratios = [ln for ln in out.stdout.splitlines() if " vs minilm " in ln]
        assert len(ratios) >= 3 and all(float(ln.split(": ")[1].split("x")[0]) > 0 for ln in ratios)
        (runner,) = [ln for ln in out.stdout.splitlines() if "over one-thread workers" in ln]
        assert float(runner.split("(")[1].split("x")[0]) > 0  # vs the one-session baseline


def test_cli_latency_refuses_zero_runs_and_times_both_backends():
    out = _run("cli_latency.py", "--runs", "0")
    assert out.returncode == 2 and "--runs must be >= 1" in out.stderr
    if importlib.util.find_spec("onnxruntime") is None:
        return
    out = _run("cli_latency.py", "--runs", "1")
    assert out.returncode == 0, out.stderr
    lines = {ln.split(":")[0].strip(): ln for ln in out.stdout.splitlines()}
    for backend in ("torch", "onnx"):
        seconds = float(lines[backend].split("median ")[1].split(" s")[0])
        assert 0 < seconds < 120
    assert "reverse_words@1" in out.stdout  # the search answered


def test_merge_quality_refuses_an_output_rank_below_one():
    out = _run("merge_quality.py", "--rank", "0")
    assert out.returncode == 2
    assert "--rank takes an output rank >= 1, not 0" in out.stderr
