"""RayBackend's own decisions, against a stand-in ``ray`` module (fast; no cluster, no GPU):
GPU requests, what a submission carries, how lost or unreachable tasks fail their jobs, and
the health it reports. The real cluster path is tests/test_jobs_ray.py."""

from __future__ import annotations

import json
import sys
import time
import types
from typing import Any

import pytest

from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.jobs import JobContext, JobService
from tests.api_helpers import make_container


def _noop(_c, _spec, _ctx: JobContext) -> JobOutcome:
    return JobOutcome(None, "ok")


register_job_kind(JobKind("test.gpu", _noop, wants_gpu=True), replace=True)
register_job_kind(JobKind("test.cpu", _noop), replace=True)


class TaskCancelledError(Exception):
    pass


class WorkerCrashedError(Exception):
    pass


class FakeRef:
    def __init__(self, options: dict[str, Any], args: tuple) -> None:
        self.options, self.args = options, args
        self.outcome: Any = None  # None: still running; else a value or an exception


class FakeRay(types.ModuleType):
    """The slice of the Ray API the backend uses, recording what it is asked to do."""

    def __init__(self, resources: dict[str, float], fail_submit: bool = False) -> None:
        super().__init__("ray")
        self.resources, self.fail_submit = resources, fail_submit
        self.initialized, self.init_kwargs = False, {}
        self.submitted: list[FakeRef] = []
        self.cancelled: list[FakeRef] = []
        self.exceptions = types.SimpleNamespace(TaskCancelledError=TaskCancelledError)

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address=None, **kwargs) -> None:
        self.initialized, self.init_kwargs = True, {"address": address, **kwargs}

    def shutdown(self) -> None:
        self.initialized = False

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources)

    def remote(self, **task_options):
        ray = self

        class Task:
            def __init__(self, fn, options):
                self.fn, self.opts = fn, options

            def options(self, **more):
                return Task(self.fn, {**self.opts, **more})

            def remote(self, *args):
                if ray.fail_submit:
                    raise ConnectionError("GCS unreachable")
                ref = FakeRef(self.opts, args)
                ray.submitted.append(ref)
                return ref

        return lambda fn: Task(fn, task_options)

    def cancel(self, ref, force=False) -> None:
        self.cancelled.append(ref)

    def wait(self, refs, num_returns, timeout, fetch_local=True):
        time.sleep(0.01)
        ready = [r for r in refs if r.outcome is not None]
        return ready, [r for r in refs if r.outcome is None]

    def get(self, ref, timeout=None):
        if isinstance(ref.outcome, BaseException):
            raise ref.outcome
        return ref.outcome


@pytest.fixture
def backend_for(tmp_path, monkeypatch):
    services: list[JobService] = []

    def make(
        resources: dict[str, float], address: str | None = "ray://head:10001", **kw: Any
    ) -> tuple[JobService, FakeRay]:
        fake = FakeRay(resources, **kw)
        monkeypatch.setitem(sys.modules, "ray", fake)
        home = tmp_path / f"home{len(services)}"
        c = make_container(home, jobs_backend="ray", ray_address=address, jobs_workers=3)
        svc = JobService(c)
        svc.start()
        services.append(svc)
        return svc, fake

    yield make
    for svc in services:
        svc.shutdown(wait=False)
        svc.container.catalog.close()


def test_gpu_is_requested_only_for_gpu_kinds_on_a_gpu_cluster(backend_for):
    svc, ray = backend_for({"CPU": 8.0, "GPU": 2.0})
    assert ray.init_kwargs["address"] == "ray://head:10001"
    assert ray.submitted == []
    svc.submit("test.gpu", {})
    svc.submit("test.gpu", {"device": "cpu"})  # pinned to CPU: no GPU reserved
    svc.submit("test.cpu", {})
    gpus = [ref.options.get("num_gpus") for ref in ray.submitted]
    assert gpus == [1, None, None]
    assert all(ref.options["max_retries"] == 0 for ref in ray.submitted)

    svc_no_gpu, ray_no_gpu = backend_for({"CPU": 8.0})
    svc_no_gpu.submit("test.gpu", {})
    assert "num_gpus" not in ray_no_gpu.submitted[0].options


def test_a_task_carries_only_settings_json_and_the_job_id(backend_for):
    svc, ray = backend_for({"CPU": 2.0})
    job = svc.submit("test.cpu", {"x": 1})
    settings_json, job_id = ray.submitted[0].args
    assert job_id == job.id
    settings = json.loads(settings_json)  # plain JSON, the same settings as the server's
    assert settings["database_url"] == svc.container.settings.database_url
    assert settings["home"] == str(svc.container.settings.home)


def test_lost_tasks_and_an_unreachable_cluster_fail_their_jobs(backend_for):
    svc, ray = backend_for({"CPU": 2.0})
    lost = svc.submit("test.cpu", {})
    cancelled = svc.submit("test.cpu", {})
    ray.submitted[0].outcome = WorkerCrashedError("The worker died unexpectedly (OOM).")
    ray.submitted[1].outcome = TaskCancelledError("cancelled")
    assert svc.wait(lost.id, timeout=10).error == (
        "ray_task_lost: WorkerCrashedError: The worker died unexpectedly (OOM)."
    )
    time.sleep(1.5)
    assert svc.get(cancelled.id).state == "queued"  # we interrupted it: the row is the truth
    details = svc.backend_status()
    assert details["ok"] and details["lost"] == 1 and details["finished"] == 2

    down, _ = backend_for({"CPU": 2.0}, fail_submit=True)
    job = down.submit("test.cpu", {})
    failed = down.get(job.id)
    assert failed.state == "failed"
    assert failed.error == "ray_unavailable: ConnectionError: GCS unreachable"


def test_cancel_interrupts_the_task_and_shutdown_interrupts_all(backend_for):
    svc, ray = backend_for({"CPU": 2.0})
    job = svc.submit("test.cpu", {})
    svc.container.catalog.update_job(job.id, state="running")
    svc.cancel(job.id)
    assert ray.cancelled == [ray.submitted[0]]
    other = svc.submit("test.cpu", {})
    assert other.state == "queued"
    svc.shutdown(wait=False)
    assert ray.submitted[1] in ray.cancelled and not ray.initialized


def test_without_an_address_a_private_local_instance_is_started_and_stopped(backend_for):
    svc, ray = backend_for({"CPU": 3.0}, address=None)
    kwargs = ray.init_kwargs
    assert kwargs["address"] is None and kwargs["num_cpus"] == 3  # jobs_workers CPUs
    assert kwargs["include_dashboard"] is False
    assert kwargs["object_store_memory"] == 128 << 20  # only ids and strings go through it
    status = svc.backend_status()
    assert status["address"] == "local" and status["resources"] == {"CPU": 3.0}
    svc.shutdown()
    assert not ray.initialized  # the server owned it, so it stopped it


def test_connecting_to_a_cluster_starts_nothing_and_leaves_it_running(backend_for):
    svc, ray = backend_for({"CPU": 64.0, "GPU": 8.0})
    assert set(ray.init_kwargs) == {"address", "logging_level", "namespace"}
    svc.shutdown()
    assert not ray.initialized  # disconnects the driver; the cluster itself is not ours
