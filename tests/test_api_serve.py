"""`loradex serve` end to end: a real uvicorn subprocess over the data dir it is given."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx

from tests.cli_helpers import cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_over_http_with_the_cli_token(tmp_path):
    home = tmp_path / "home"
    token = cli(home, "token", "create", "--json").json()["token"]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "LORADEX_DATABASE_URL"}
    env["LORADEX_JOBS_WORKER"] = "4"  # a typo of LORADEX_JOBS_WORKERS: named once in the log
    cmd = [sys.executable, "-m", "hub.cli", "--data-dir", str(home), "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health.json()["status"] == "ok"
        assert httpx.get(f"{url}/adapters").json() == {"data": [], "count": 0, "total": 0}
        headers = {"Authorization": f"Bearer {token}"}
        gone = httpx.delete(f"{url}/adapters/missing", headers=headers)
        assert gone.status_code == 404  # the token made by the CLI is valid for the server
        assert httpx.delete(f"{url}/adapters/missing").status_code == 401
        assert "/merges" in httpx.get(f"{url}/openapi.json").json()["paths"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert log.count("LORADEX_JOBS_WORKER is not a setting") == 1, log
    assert "did you mean LORADEX_JOBS_WORKERS?" in log
