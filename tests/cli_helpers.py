"""Run the ``loradex`` CLI in-process (fast) or as a real subprocess (entry point, exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from hub.cli import app

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def cli(data_dir: Path, *args: str, env: dict | None = None) -> Run:
    runner = CliRunner()
    result = runner.invoke(app, ["--data-dir", str(data_dir), *map(str, args)], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


def cli_proc(*args: str, env: dict | None = None, timeout: float = 120) -> Run:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "hub.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)
