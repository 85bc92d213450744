"""SIGKILL `loradex add` at random points; the catalog and blob store must stay consistent.

After every kill: no version is visible without its blob, every visible blob's sha256 matches,
versions stay gapless, SQLite's integrity_check is ok. At the end `gc` removes every orphan.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

from storage.catalog import open_catalog
from tests.factories import peft_config, write_adapter_dir

RUNS = int(os.environ.get("LORADEX_CRASH_RUNS", "60"))
BIG = {"q_proj": (1024, 1024), "v_proj": (1024, 1024)}


def _add_cmd(home, src):
    return [
        sys.executable,
        "-m",
        "hub.cli",
        "--data-dir",
        str(home),
        "add",
        str(src),
        "--name",
        "crash",
    ]


def _check_consistent(home):
    catalog = open_catalog(f"sqlite:///{home / 'catalog.db'}")
    try:
        assert catalog.integrity_check() == "ok"
        items, _ = catalog.list_items(all_versions=True, limit=10_000)
        versions = sorted(i.version for i in items)
        assert versions == list(range(1, len(versions) + 1)), versions
        for item in items:
            blob = home / "blobs" / "sha256" / item.digest[:2] / item.digest
            assert blob.is_file(), f"version {item.version} visible without its blob"
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == item.digest
        return {i.digest for i in items}
    finally:
        catalog.close()


def test_sigkill_during_add_never_leaves_half_registered_adapters(tmp_path):
    home = tmp_path / "home"
    subprocess.run([*_add_cmd(home, "x")[:5], "init"], check=True, capture_output=True)
    config = peft_config(r=16, alpha=32)

    # Calibrate: how long a full add takes here, so kills land across its whole run.
    t0 = time.monotonic()
    src = write_adapter_dir(tmp_path / "src-cal", r=16, layers=8, shapes=BIG, seed=0, config=config)
    subprocess.run(_add_cmd(home, src), check=True, capture_output=True)
    full = time.monotonic() - t0

    rng = random.Random(1234)
    killed = 0
    for run in range(1, RUNS + 1):
        src = write_adapter_dir(
            tmp_path / f"src-{run}", r=16, layers=8, shapes=BIG, seed=run, config=config
        )
        proc = subprocess.Popen(
            _add_cmd(home, src), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.2, 1.1) * full)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        _check_consistent(home)
    assert killed >= RUNS // 3, f"only {killed} of {RUNS} runs were killed mid-way"

    referenced = _check_consistent(home)
    gc = subprocess.run(
        [*_add_cmd(home, "x")[:5], "gc", "--grace", "0", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert gc.returncode == 0
    on_disk = {p.name for p in (home / "blobs" / "sha256").rglob("*") if p.is_file()}
    assert on_disk == referenced
    assert not [p for p in (home / "blobs" / "tmp").rglob("*") if p.is_file()]
