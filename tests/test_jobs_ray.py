"""The Ray job backend against real Ray instances started by the test.

The servers connect to a cluster the test starts with ``ray start --head`` (``LORADEX_RAY_ADDRESS``,
token authentication on, in a temp dir, stopped after by its process group). The other way to
find Ray, a private local instance when no address is set, is checked against a stand-in Ray in
tests/test_jobs_ray_unit.py (one real cluster start per run is what CI time allows).

The Ray driver is always a `loradex serve` subprocess with ``LORADEX_JOBS_BACKEND=ray``: Ray's
own transport pickles between its trusted processes, and this test process keeps the
suite-wide ban on unpickling (tests/conftest.py) — it never imports Ray and talks to the server
over HTTP and to the catalog directly. Jobs of the test-only kinds in ``tests/ray_job_kinds.py``
are written to the catalog before the server starts, so its restart recovery hands them to Ray
(the server has no generic job route); merges go through ``POST /merges`` like a user's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hub.core.models import AdapterMeta
from hub.services.jobs import JobService
from storage.catalog.engine import normalize_url
from tests.api_helpers import auth, make_container, new_token
from tests.catalog_fixtures import PG_ENV
from tests.factories import write_adapter_dir

# find_spec, not importorskip: importing Ray here would defeat the point (see the docstring).
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="the Ray backend needs `pip install loradex[ray]`",
)

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"succeeded", "failed", "cancelled"}
KINDS_MODULE = "tests.ray_job_kinds"  # imported by the server and its Ray workers
# One logical CPU per pre-queued test job plus one, so no test waits for another test's job.
RAY_CPUS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORADEX_", "RAY_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM, then SIGKILL to the process group *this test started* (its own session)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class RayHead:
    """``ray start --head --block`` in a short temp dir (Unix socket paths must stay short),
    with token authentication through a random per-test token."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ldx-ray-", dir="/tmp"))
        self.address = f"127.0.0.1:{_free_port()}"
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        self.log = self.dir / "head.log"
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            f"--port={self.address.rsplit(':', 1)[1]}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={RAY_CPUS}",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--object-store-memory={100 << 20}",  # only ids and strings go through it
            f"--temp-dir={self.dir}",
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                env={**_base_env(), **self.auth},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"ray start failed: {self.log.read_text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        _stop_group(self.proc, grace=5)  # it would drain for 30 s; nothing is left to drain
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    """`loradex serve` with the Ray backend: on the cluster at ``head``, or (None) on a
    private local Ray instance of ``RAY_CPUS`` CPUs that the server starts and stops."""

    def __init__(
        self, home: Path, log: Path, head: RayHead | None, database_url: str | None = None
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = _base_env()
        env.update(
            LORADEX_JOBS_BACKEND="ray",
            LORADEX_JOBS_WORKERS=str(RAY_CPUS),
            LORADEX_JOB_MODULES=f'["{KINDS_MODULE}"]',
            LORADEX_TEXT_EMBEDDER="hash",
        )
        if head is not None:
            env.update(LORADEX_RAY_ADDRESS=head.address, **head.auth)
        if database_url is not None:
            env["LORADEX_DATABASE_URL"] = database_url
        cmd = [sys.executable, "-m", "hub.cli", "--data-dir", str(home), "serve"]
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its Ray processes can be stopped as one group
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                self.health = httpx.get(f"{self.url}/health", timeout=5).json()
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"server did not start: {log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.3)

    def get(self, path: str) -> Any:
        return httpx.get(f"{self.url}{path}", timeout=30).json()

    def stop(self) -> None:
        """Graceful first: the lifespan interrupts its Ray tasks (and stops a private
        instance); then nothing of this server's process group may be left."""
        _stop_group(self.proc, grace=60)
        self._log.close()


def wait_job(server: Server, job_id: str, states: set[str], timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    job = server.get(f"/jobs/{job_id}")
    while job["state"] not in states and time.monotonic() < deadline:
        time.sleep(0.1)
        job = server.get(f"/jobs/{job_id}")
    assert job["state"] in states, job
    return dict(job)


@pytest.fixture(scope="module")
def database_url():
    """PostgreSQL when the suite has one (the scale-out setup: a shared catalog), else None:
    SQLite in the data dir, which the local cluster's workers share through the disk."""
    admin = os.environ.get(PG_ENV)
    if not admin:
        yield None
        return
    name = f"loradex_ray_{uuid.uuid4().hex}"
    engine = create_engine(normalize_url(admin), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield (
            make_url(normalize_url(admin)).set(database=name).render_as_string(hide_password=False)
        )
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory, database_url):
    """A catalog with adapters and pre-queued test jobs, and the Ray-backed server over it."""
    tmp = tmp_path_factory.mktemp("ray")
    home = tmp / "home"
    container = make_container(home, database_url, text_embedder="hash", job_modules=[KINDS_MODULE])
    for i, name in enumerate(["a", "b"]):
        src = write_adapter_dir(tmp / f"src-{name}", seed=i + 1)
        container.registry.add_path(src, AdapterMeta(name=name))
    odd = write_adapter_dir(tmp / "src-q-only", seed=3, targets=("q_proj",))
    container.registry.add_path(odd, AdapterMeta(name="q-only"))
    jobs = JobService(container)  # not started: it only writes rows, like the CLI
    queued = {
        "cancel_api": jobs.submit("test.gated", {"gate": str(tmp / "never-1")}).id,
        "cancel_cli": jobs.submit("test.gated", {"gate": str(tmp / "never-2")}).id,
        "dies": jobs.submit("test.dies", {}).id,
        "restart": jobs.submit("test.gated", {"gate": str(tmp / "gate-restart")}).id,
    }
    env = {"container": container, "jobs": queued, "tmp": tmp, "token": new_token(container)}
    head = env["head"] = RayHead()
    try:
        env["server"] = Server(home, tmp / "serve.log", head, database_url)
        try:
            yield env
        finally:
            env["server"].stop()
    finally:
        head.stop()
        container.catalog.close()


def test_this_process_never_loads_ray(ray_env):
    """The suite's unpickling ban stays whole: Ray (and its pickle transport) live only in
    the server and its workers."""
    assert "ray" not in sys.modules


def test_health_reports_the_ray_backend_and_its_cluster(ray_env):
    health = ray_env["server"].get("/health")
    assert health["status"] == "ok" and health["jobs_backend"] == "ray"
    dialect = "postgresql" if ray_env["container"].settings.database_url else "sqlite"
    assert health["database"] == {"ok": True, "dialect": dialect}
    jobs = health["jobs"]
    assert jobs["ok"] and jobs["backend"] == "ray"
    assert jobs["details"]["address"] == ray_env["head"].address
    assert jobs["details"]["resources"]["CPU"] == RAY_CPUS  # the cluster's, not this box's
    assert jobs["details"]["submitted"] >= 3  # the three queued jobs, resumed at start


def test_merge_job_runs_as_a_ray_task_and_publishes_with_lineage(ray_env):
    server, token = ray_env["server"], ray_env["token"]
    body = {"adapters": ["a", "b"], "method": "svd", "params": {"rank": 4}, "name": "ab"}
    r = httpx.post(f"{server.url}/merges", json=body, headers=auth(token), timeout=30)
    assert r.status_code == 202, r.text
    job = wait_job(server, r.json()["job_id"], TERMINAL)
    assert (job["state"], job["progress"], job["result"]) == ("succeeded", 1.0, "ab@1"), job
    merged = server.get("/adapters/ab")
    assert merged["source"] == "merge"
    parents = {(p["name"], p["version"]) for p in merged["lineage"]["parents"]}
    assert parents == {("a", 1), ("b", 1)}
    assert merged["lineage"]["recipe"]["method"] == "svd"
    assert server.get("/health")["jobs"]["details"]["finished"] >= 1


def test_cancel_over_the_api_interrupts_the_running_ray_task(ray_env):
    server, job_id = ray_env["server"], ray_env["jobs"]["cancel_api"]
    wait_job(server, job_id, {"running"})
    r = httpx.post(f"{server.url}/jobs/{job_id}/cancel", headers=auth(ray_env["token"]))
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    job = wait_job(server, job_id, TERMINAL, timeout=30)
    assert job["state"] == "cancelled" and job["message"] == "cancelled"
    assert time.monotonic() - t0 < 10


def test_cancel_from_another_process_reaches_the_ray_task(ray_env):
    """`loradex jobs cancel` only flags the row; the task's watcher must notice on its own."""
    server, job_id = ray_env["server"], ray_env["jobs"]["cancel_cli"]
    wait_job(server, job_id, {"running"})
    JobService(ray_env["container"]).cancel(job_id)
    job = wait_job(server, job_id, TERMINAL, timeout=30)
    assert job["state"] == "cancelled", job


def test_a_failing_merge_records_the_clear_error(ray_env):
    """What the catalog can decide is refused at submit time; what only the worker can find
    out (here: no CUDA where the task runs) fails the job with the clear code."""
    import torch

    server, token = ray_env["server"], ray_env["token"]
    body = {"adapters": ["a", "q-only"], "method": "svd", "name": "a-q"}
    r = httpx.post(f"{server.url}/merges", json=body, headers=auth(token), timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "module_set_mismatch", r.text
    if torch.cuda.is_available():
        pytest.skip("the worker-side failure below needs a machine without CUDA")
    body = {"adapters": ["a", "q-only"], "method": "svd", "name": "a-q", "device": "cuda",
            "params": {"modules": "intersection"}}  # fmt: skip
    r = httpx.post(f"{server.url}/merges", json=body, headers=auth(token), timeout=30)
    assert r.status_code == 202, r.text
    job = wait_job(server, r.json()["job_id"], TERMINAL)
    assert job["state"] == "failed" and job["result"] is None
    assert job["error"].startswith("device_unavailable: ") and job["error_code"] == (
        "device_unavailable"
    )
    assert httpx.get(f"{server.url}/adapters/a-q").status_code == 404  # nothing published


def test_a_dead_ray_worker_fails_its_job_with_the_reason(ray_env):
    server, job_id = ray_env["server"], ray_env["jobs"]["dies"]
    job = wait_job(server, job_id, TERMINAL)
    assert job["state"] == "failed", job
    assert job["error"].startswith("ray_task_lost: "), job["error"]
    assert "WorkerCrashedError" in job["error"] or "died" in job["error"].lower()


def test_graceful_restart_requeues_the_running_job_and_resumes_it(ray_env):
    """Last on purpose: it replaces the module's server. SIGTERM interrupts the Ray task (no
    cancel flag -> the job goes back to queued); the next server resubmits it to Ray."""
    job_id, catalog = ray_env["jobs"]["restart"], ray_env["container"].catalog
    first = ray_env["server"]
    wait_job(first, job_id, {"running"})
    first.stop()
    requeued = catalog.get_job(job_id)
    assert requeued.state == "queued", requeued
    assert requeued.message == "interrupted by shutdown; resumes"
    second = ray_env["server"] = Server(
        ray_env["container"].settings.home,
        ray_env["tmp"] / "2.log",
        ray_env["head"],
        ray_env["container"].settings.database_url,
    )
    wait_job(second, job_id, {"running"})
    (ray_env["tmp"] / "gate-restart").touch()
    job = wait_job(second, job_id, TERMINAL)
    assert job["state"] == "succeeded", job
    worker_pid = int(job["message"].rsplit(" ", 1)[1])
    assert worker_pid not in (first.proc.pid, second.proc.pid)  # it ran in a Ray worker
