"""Bad inputs found by a CLI-wide audit: each is one `error [CODE]` line with the contract's exit
code (never `error [internal]`), and nothing in the data dir changes."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from tests.cli_helpers import cli
from tests.factories import write_adapter_dir


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    src = write_adapter_dir(tmp_path / "src", seed=1)
    assert cli(home, "add", src, "--name", "a").code == 0
    return home


def _files(home: Path) -> set[str]:
    """Files of the data dir, less SQLite's WAL and shared-memory files (they come and go with
    checkpoints, whatever the command did)."""
    return {
        str(p.relative_to(home)) for p in home.rglob("*") if not p.name.endswith(("-wal", "-shm"))
    }


@pytest.mark.parametrize(
    "args",
    [
        ["show", "a@9223372036854775808"],
        ["rm", "a@99999999999999999999"],
        ["export", "a@2147483648", "out"],
        ["ls", "--offset", "9223372036854775808"],
        ["token", "revoke", "9223372036854775808"],
        ["gc", "--grace", "nan"],
        ["gc", "--grace", "-5"],
        ["add", "src", "--name", ""],
        ["serve", "--log-level", "bogus"],
        ["base", "add", "x/l", "--config", "list.json"],
        [
            "train",
            "--base",
            "smollm2-135m-instruct",
            "--task",
            "capital_of",
            "--rank",
            "4",
            "--name",
            "",
        ],
    ],
)
def test_out_of_range_and_empty_values_are_bad_input(home, tmp_path, args):
    before = _files(home)
    (tmp_path / "list.json").write_text("[]")
    args = [str(tmp_path / a) if a in ("src", "out", "list.json") else a for a in args]
    run = cli(home, *args)
    assert run.code == 2, (run.code, run.stderr)
    # options typer refuses are usage errors (the one-line form comes from `main`, see
    # test_cli's usage tests); the rest are the service's one line
    assert "internal" not in run.stderr
    assert run.stderr.startswith(("error [", "Usage: loradex"))
    assert _files(home) == before


def test_gc_with_a_bad_grace_keeps_a_young_unreferenced_blob(home):
    blobs = home / "blobs"
    young = blobs / "ab" / ("ab" + "0" * 62)
    young.parent.mkdir(parents=True, exist_ok=True)
    young.write_bytes(b"written by an add that has not committed yet")
    assert "bad_grace" in cli(home, "gc", "--grace", "nan").stderr
    assert young.exists()


@pytest.mark.parametrize("dest", ["under-file", "long"])
def test_export_to_an_unwritable_destination_is_named(home, tmp_path, dest):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    target = {
        "under-file": blocker / "sub",
        "long": tmp_path / ("n" * 300),
    }[dest]
    run = cli(home, "export", "a", target)
    assert run.code == 2 and "[export_destination]" in run.stderr, run.stderr


def test_a_missing_blob_is_a_damaged_store_not_a_typo(home, tmp_path):
    digest = cli(home, "show", "a", "--json").json()["digest"]
    next(p for p in (home / "blobs").rglob(digest)).unlink()
    run = cli(home, "export", "a", tmp_path / "out")
    assert run.code == 1 and "[blob_missing]" in run.stderr and "loradex verify" in run.stderr
    assert cli(home, "verify").code == 1


def test_bad_data_dirs_are_named(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    run = cli(a_file, "ls")
    assert run.code == 2 and "[bad_data_dir]" in run.stderr and "is a file" in run.stderr
    not_db = tmp_path / "not-db"
    not_db.mkdir()
    (not_db / "catalog.db").write_text("not a database")
    run = cli(not_db, "ls")
    assert run.code == 1 and "[catalog_unreadable]" in run.stderr
    assert (not_db / "catalog.db").read_text() == "not a database"  # untouched


def test_an_empty_data_dir_option_is_refused_not_the_current_directory(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "hub.cli", "--data-dir", "", "init", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "--data-dir" in run.stderr and "is empty" in run.stderr
    assert list(tmp_path.iterdir()) == []  # no catalog appeared in the working directory


def test_an_empty_revert_name_is_refused(home, tmp_path):
    src = write_adapter_dir(tmp_path / "b", seed=2)
    assert cli(home, "add", src, "--name", "b").code == 0
    assert cli(home, "merge", "a", "b", "--method", "rmm", "--name", "ab").code == 0
    run = cli(home, "revert", "ab", "--member", "a", "--name", "")
    assert run.code == 2 and "[invalid_name]" in run.stderr, run.stderr
    names = [d["name"] for d in cli(home, "ls", "--json").json()["data"]]
    assert sorted(names) == ["a", "ab", "b"]


def test_serve_on_a_port_in_use_or_a_bad_host_is_one_error_line(home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        run = cli(home, "serve", "--port", str(port))
        assert run.code == 1 and "[address_in_use]" in run.stderr and time.monotonic() - t0 < 30
    run = cli(home, "serve", "--host", "not a host!!", "--port", str(port))
    assert run.code == 2 and "[bad_host]" in run.stderr


def test_an_empty_path_setting_means_its_default_not_the_current_directory(tmp_path, monkeypatch):
    """`LORADEX_BLOB_DIR=` in a shell profile used to put blobs (or a catalog, or the ONNX
    export) into whatever directory a command ran from."""
    from hub.config import default_home, load_settings

    for name in ("BLOB_DIR", "MODEL_CACHE_DIR", "ZOO_DIR", "EMBEDDER_CACHE_DIR"):
        monkeypatch.setenv(f"LORADEX_{name}", " ")
    monkeypatch.setenv("LORADEX_HOME", "")
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.home == default_home()
    assert (s.blob_dir, s.model_cache_dir, s.zoo_dir, s.embedder_cache_dir) == (None,) * 4
    assert s.resolved_blob_dir == default_home() / "blobs"
    monkeypatch.setenv("LORADEX_BLOB_DIR", str(tmp_path / "b"))
    assert load_settings(tmp_path / "h").resolved_blob_dir == tmp_path / "b"


@pytest.mark.parametrize(
    "args",
    [
        ["mix", "a", "a", "--name", "m"],
        ["transfer", "a", "--to", "gemma3-270m", "--name", "t"],
        ["merge", "a", "a", "--name", "x"],
    ],
)
@pytest.mark.parametrize("seed", ["-1", str(2**31)])
def test_every_command_names_a_seed_out_of_range_alike(home, args, seed):
    """One range and one code: `mix` said invalid_spec and `transfer` bad_input or usage."""
    before = _files(home)
    run = cli(home, *args, "--seed", seed)
    assert run.code == 2 and "[seed_out_of_range]" in run.stderr, run.stderr
    assert "seed must be 0..2147483647" in run.stderr
    assert _files(home) == before
