"""The job service: kinds registry, worker pool, progress, failure, cooperative cancel, restart
recovery and graceful shutdown; plus `loradex jobs` on the CLI."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from hub.core.errors import BadInputError, ConflictError, UnknownNameError
from hub.services.job_kinds import JobKind, JobOutcome, get_job_kind, register_job_kind
from hub.services.jobs import RESTART_REASON, JobContext, JobService
from tests.api_helpers import make_container
from tests.cli_helpers import cli

GATE = threading.Event()  # holds "test.blocking" jobs until a test opens it
RAN: list[str] = []


def _ok(_c, spec, ctx: JobContext) -> JobOutcome:
    ctx.progress(0.5, "halfway")
    RAN.append(spec.get("tag", ""))
    return JobOutcome(None, "all good")


def _sleepy(_c, spec, ctx: JobContext) -> JobOutcome:
    steps = int(spec.get("steps", 200))
    for i in range(steps):
        ctx.progress(i / steps, f"step {i}")
        time.sleep(0.01)
    return JobOutcome(None, "slept")


def _blocking(_c, _spec, ctx: JobContext) -> JobOutcome:
    while not GATE.wait(0.01):
        ctx.check()
    return JobOutcome(None, "released")


def _fails(_c, _spec, _ctx) -> JobOutcome:
    raise BadInputError("nope", code="test_refused")


def _crashes(_c, _spec, _ctx) -> JobOutcome:
    raise RuntimeError("boom")


def _needs_x(_c, spec):
    if "x" not in spec:
        raise BadInputError("spec needs x", code="invalid_spec")
    return {**spec, "normalized": True}


for _kind in (
    JobKind("test.ok", _ok, validate=None),
    JobKind("test.sleepy", _sleepy),
    JobKind("test.blocking", _blocking),
    JobKind("test.fails", _fails),
    JobKind("test.crashes", _crashes),
    JobKind("test.validated", _ok, validate=_needs_x),
):
    register_job_kind(_kind, replace=True)


@pytest.fixture
def container(tmp_path, catalog_url):
    c = make_container(tmp_path / "home", catalog_url, jobs_workers=1)
    yield c
    c.catalog.close()


@pytest.fixture
def jobs(container):
    GATE.clear()
    svc = JobService(container)
    svc.start()
    yield svc
    GATE.set()
    svc.shutdown()


def wait_state(svc: JobService, job_id: str, state: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    job = svc.get(job_id)
    while job.state != state and time.monotonic() < deadline:
        time.sleep(0.02)
        job = svc.get(job_id)
    assert job.state == state, job
    return job


def test_unknown_kind_lists_the_known_ones(jobs):
    with pytest.raises(UnknownNameError) as exc:
        jobs.submit("nope", {})
    assert exc.value.code == "unknown_job_kind" and "merge" in exc.value.details["known"]
    assert get_job_kind("merge").name == "merge"


def test_submit_runs_to_success_with_progress_and_message(jobs):
    job = jobs.submit("test.ok", {"tag": "one"})
    assert job.state == "queued"
    done = jobs.wait(job.id)
    assert (done.state, done.progress, done.message) == ("succeeded", 1.0, "all good")
    assert done.started_at is not None and done.finished_at is not None


def test_validate_runs_at_submit_time(jobs):
    with pytest.raises(BadInputError):
        jobs.submit("test.validated", {})
    assert jobs.list() == []
    job = jobs.submit("test.validated", {"x": 1})
    assert job.spec == {"x": 1, "normalized": True}


def test_failures_are_recorded_not_raised(jobs):
    failed = jobs.wait(jobs.submit("test.fails", {}).id)
    assert failed.state == "failed" and failed.error == "test_refused: nope"
    crashed = jobs.wait(jobs.submit("test.crashes", {}).id)
    assert crashed.state == "failed" and crashed.error == "internal: RuntimeError: boom"
    assert jobs.wait(jobs.submit("test.ok", {}).id).state == "succeeded"  # the pool survived


def test_cancel_queued_job_is_immediate_and_it_never_runs(jobs):
    blocker = jobs.submit("test.blocking", {})
    wait_state(jobs, blocker.id, "running")
    queued = jobs.submit("test.ok", {"tag": "never"})
    cancelled = jobs.cancel(queued.id)
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    GATE.set()
    assert jobs.wait(blocker.id).state == "succeeded"
    time.sleep(0.2)
    assert jobs.get(queued.id).state == "cancelled" and "never" not in RAN
    with pytest.raises(ConflictError) as exc:
        jobs.cancel(queued.id)
    assert exc.value.code == "job_finished"


def _record(_c, spec, _ctx) -> JobOutcome:
    with open(spec["log"], "a") as f:  # O_APPEND: whole short lines from any process
        f.write(f"{os.getpid()}\n")
    return JobOutcome(None, "recorded")


register_job_kind(JobKind("test.record", _record), replace=True)


def _race_for(home, catalog_url, job_id, barrier) -> None:
    from hub.services.jobs import execute_job

    container = make_container(home, catalog_url)  # its own engine, as in another process
    catalog, update_job = container.catalog, container.catalog.update_job

    def slow_update(*args, **kwargs):  # widens the race: a worker that decides from a read
        time.sleep(0.3)  # it made earlier would now find every other worker past that read
        return update_job(*args, **kwargs)

    catalog.update_job = slow_update
    barrier.wait()
    execute_job(container, job_id)
    container.catalog.close()


def test_workers_in_four_processes_racing_for_one_queued_job_run_it_once(tmp_path, catalog_url):
    """Starting a job is a compare-and-set on its row, so it holds across processes, which
    share no lock: the job function runs once whoever wins."""
    home = tmp_path / "home"
    container = make_container(home, catalog_url)
    log = tmp_path / "ran.log"
    job = container.catalog.create_job("test.record", {"log": str(log)})
    ctx = multiprocessing.get_context("fork")  # the children inherit the registered job kind
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_race_for, args=(home, catalog_url, job.id, barrier))
             for _ in range(4)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(log.read_text().split()) == 1
    assert container.catalog.get_job(job.id).state == "succeeded"
    container.catalog.close()


def test_cancel_that_loses_the_race_to_a_worker_flags_the_running_job(container):
    """cancel reads the row as queued, a worker (another process) starts it before cancel
    writes: the compare-and-set fails, so the job is flagged, never marked cancelled while
    it runs."""
    from hub.services.jobs import CANCEL_KEY

    svc = JobService(container)  # not started: no backend, the "worker" below is by hand
    job = container.catalog.create_job("test.ok", {})
    catalog, get_job = container.catalog, container.catalog.get_job

    def read_then_lose(job_id):
        record = get_job(job_id)
        if record.state == "queued":  # the worker wins between cancel's read and its write
            catalog.update_job(job_id, only_from={"queued"}, state="running")
        return record

    catalog.get_job = read_then_lose
    flagged = svc.cancel(job.id)
    assert flagged.state == "running" and flagged.message == "cancelling"
    assert flagged.spec[CANCEL_KEY] is True and flagged.finished_at is None


def test_cancel_running_job_is_cooperative(jobs):
    job = jobs.submit("test.sleepy", {"steps": 2000})
    wait_state(jobs, job.id, "running")
    flagged = jobs.cancel(job.id)
    assert flagged.state == "running"  # it stops at its next progress report
    done = jobs.wait(job.id)
    assert done.state == "cancelled" and done.progress < 1.0


def test_cancel_from_another_process_reaches_the_worker(jobs, container):
    job = jobs.submit("test.sleepy", {"steps": 2000})
    wait_state(jobs, job.id, "running")
    JobService(container).cancel(job.id)  # like `loradex jobs cancel`: no shared memory
    assert jobs.wait(job.id, timeout=20).state == "cancelled"


def test_restart_fails_running_jobs_and_resumes_queued_ones(container):
    crashed = container.catalog.create_job("test.ok", {"tag": "crashed"})
    container.catalog.update_job(crashed.id, state="running", progress=0.4)
    waiting = container.catalog.create_job("test.ok", {"tag": "resumed"})
    svc = JobService(container)
    recovery = svc.start()
    try:
        assert recovery.failed == [crashed.id] and recovery.resumed == [waiting.id]
        failed = svc.get(crashed.id)
        assert failed.state == "failed" and failed.error == RESTART_REASON
        assert svc.wait(waiting.id).state == "succeeded"
    finally:
        svc.shutdown()


def test_shutdown_requeues_running_jobs_for_the_next_start(container):
    svc = JobService(container)
    svc.start()
    job = svc.submit("test.sleepy", {"steps": 100})
    wait_state(svc, job.id, "running")
    svc.shutdown()
    assert svc.get(job.id).state == "queued"
    again = JobService(container)
    again.start()
    try:
        assert again.wait(job.id).state == "succeeded"
    finally:
        again.shutdown()


def test_unknown_backend_is_refused(tmp_path):
    c = make_container(tmp_path / "home", jobs_backend="slurm")
    with pytest.raises(UnknownNameError) as exc:
        JobService(c).start()
    assert exc.value.code == "unknown_jobs_backend"
    assert exc.value.details["known"] == ["inprocess", "ray"]


def test_jobs_cli_ls_show_cancel(tmp_path, catalog_url, monkeypatch):
    monkeypatch.setenv("LORADEX_DATABASE_URL", catalog_url)
    home = tmp_path / "home"
    c = make_container(home, catalog_url)
    job = c.catalog.create_job("test.ok", {"tag": "cli"})
    listing = cli(home, "jobs", "ls", "--json").json()
    assert listing["count"] == 1 and listing["data"][0]["id"] == job.id
    assert cli(home, "jobs", "ls", "--state", "running", "--json").json()["count"] == 0
    shown = cli(home, "jobs", "show", job.id, "--json").json()
    assert {"id", "kind", "state", "progress", "message", "result", "error"} <= shown.keys()
    assert cli(home, "jobs", "cancel", job.id, "--json").json()["state"] == "cancelled"
    again = cli(home, "jobs", "cancel", job.id)
    assert again.code == 1 and "job_finished" in again.stderr
    assert cli(home, "jobs", "show", "nope").code == 2
    c.catalog.close()
