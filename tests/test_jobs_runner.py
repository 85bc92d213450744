"""Several server processes over one catalog: one runs jobs (it holds <home>/jobs.lock), the
others queue them and the runner picks them up; the lock passes on when the runner stops.
End to end with `loradex serve --processes 2` over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from hub.core.models import AdapterMeta
from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.jobs import JobContext, JobService
from tests.api_helpers import auth, make_container, new_token
from tests.factories import write_adapter_dir


def _ok(_c, _spec, ctx: JobContext) -> JobOutcome:
    ctx.progress(0.5, "halfway")
    return JobOutcome(None, f"ran in {os.getpid()}")


register_job_kind(JobKind("test.runner", _ok), replace=True)


@pytest.fixture
def two(tmp_path, catalog_url):
    """Two job services over one catalog and data dir, as two server processes have."""
    first = JobService(make_container(tmp_path / "home", catalog_url))
    second = JobService(make_container(tmp_path / "home", catalog_url))
    yield first, second
    for svc in (first, second):
        svc.shutdown()
        svc.container.catalog.close()


def test_one_runner_the_other_queues_and_the_runner_picks_it_up(two, tmp_path):
    first, second = two
    lock = tmp_path / "home" / "jobs.lock"
    assert first.start(exclusive=lock) is not None  # the runner
    assert second.start(exclusive=lock) is None  # queues only
    assert second.backend_status() == {"ok": True, "started": False}  # someone runs jobs
    job = second.submit("test.runner", {})
    done = second.wait(job.id, timeout=20)
    assert done.state == "succeeded" and done.message == f"ran in {os.getpid()}"
    own = first.wait(first.submit("test.runner", {}).id, timeout=20)
    assert own.state == "succeeded"

    first.shutdown()  # the lock is released: nobody runs jobs now, and health says so
    assert second.backend_status()["ok"] is False
    waiting = second.submit("test.runner", {})
    time.sleep(0.6)
    assert second.get(waiting.id).state == "queued"
    third = JobService(make_container(tmp_path / "home", first.container.settings.database_url))
    try:
        recovery = third.start(exclusive=lock)
        assert recovery is not None and recovery.resumed == [waiting.id]
        assert third.wait(waiting.id, timeout=20).state == "succeeded"
    finally:
        third.shutdown()
        third.container.catalog.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_two_processes_runs_jobs_submitted_to_either(tmp_path):
    home = tmp_path / "home"
    c = make_container(home, text_embedder="hash")
    for i, name in enumerate(["a", "b"]):
        src = write_adapter_dir(tmp_path / f"src-{name}", seed=i + 1)
        c.registry.add_path(src, AdapterMeta(name=name, description=f"adapter {name}"))
    token = new_token(c)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORADEX_")}
    env["LORADEX_TEXT_EMBEDDER"] = "hash"
    cmd = [sys.executable, "-m", "hub.cli", "--data-dir", str(home), "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--processes", "2", "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.3)
        # Every process answers health ok: one runs jobs, the others see that it does.
        healths = [httpx.get(f"{url}/health", timeout=10).json() for _ in range(8)]
        assert all(h["status"] == "ok" for h in healths), healths
        jobs = []
        for i in range(4):  # new connections: spread over both processes
            body = {"adapters": ["a", "b"], "method": "cat", "name": f"ab{i}"}
            r = httpx.post(f"{url}/merges", json=body, headers=auth(token), timeout=30)
            assert r.status_code == 202, r.text
            jobs.append(r.json()["job_id"])
        for job_id in jobs:
            deadline = time.monotonic() + 90
            job = httpx.get(f"{url}/jobs/{job_id}").json()
            while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
                time.sleep(0.2)
                job = httpx.get(f"{url}/jobs/{job_id}").json()
            assert job["state"] == "succeeded", job
        hits = httpx.get(f"{url}/search", params={"q": "adapter ab3", "k": 10}).json()["data"]
        assert "ab3" in {h["name"] for h in hits}  # visible to search in whichever process
    finally:
        proc.terminate()
        proc.wait(timeout=60)
