"""Jobs: long work (merges; later mixtures, generations, transfers, syncs) off the request path.

A job is a catalog row (``queued -> running -> succeeded | failed | cancelled``) plus a job
function registered by kind. Submitting validates the spec up front (bad input fails the request,
not the job), persists the row as ``queued`` and hands its id to a backend. Every backend runs
the same :func:`execute_job`, so the in-process thread pool and the Ray backend (a Ray task that
builds a Container from the same settings and calls ``execute_job``: hub/services/jobs_ray.py)
share all semantics.

Cancellation is cooperative: a queued job is cancelled at once; a running one is flagged, and the
job function's next progress report raises :class:`JobCancelled`. The flag lives in two places:
an in-memory event (instant, this process) and the job's spec in the catalog (seen by a worker in
another process on its next progress write, which returns the fresh row anyway). Starting and
cancelling are compare-and-set on the row (``update_job(only_from=...)``, under its write lock),
so a start and a cancel racing from two processes cannot both win.

Restart recovery (``JobService.start``): a job still ``running`` belonged to a process that died,
so it is failed with ``RESTART_REASON`` (code ``job_interrupted``); ``queued`` jobs are handed to
the backend again.
This assumes one process per catalog runs jobs: ``loradex serve`` (any number of processes)
passes ``start(exclusive=<home>/jobs.lock)``, so only the lock holder does
(hub/services/jobs_runner.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hub.core.errors import ConflictError, HubError, UnknownNameError
from hub.core.models import OPEN_JOB_STATES, TERMINAL_JOB_STATES, JobRecord
from hub.services.job_kinds import get_job_kind, load_job_modules
from hub.services.job_specs import check_pins
from hub.services.jobs_runner import QueueWatcher, RunnerLock

if TYPE_CHECKING:
    from hub.services.container import Container
    from storage.catalog import Catalog

log = logging.getLogger(__name__)

CANCEL_KEY = "cancel_requested"  # set in a job's spec by cancel(); read back by the worker
RESTART_REASON = "job_interrupted: interrupted by a restart"
# Progress is written at most this often (plus on every message change and at 100%): a job
# reporting per module must not turn into thousands of catalog commits.
PROGRESS_INTERVAL_S = 0.2


class JobCancelled(Exception):
    """Raised inside a job function by ``JobContext.progress`` once cancel was requested."""


class JobInterrupted(Exception):
    """Raised inside a job function when the server shuts down: the job goes back to queued."""


class JobContext:
    """What a job function gets besides its spec: progress reporting and cancellation."""

    def __init__(
        self,
        container: Container,
        job_id: str,
        cancel: threading.Event,
        stopping: threading.Event | None = None,
    ) -> None:
        self.container, self.job_id = container, job_id
        self._cancel, self._stopping = cancel, stopping or threading.Event()
        self._last_write, self._last_message = 0.0, ""

    def check(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled(self.job_id)
        if self._stopping.is_set():
            raise JobInterrupted(self.job_id)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1); raises JobCancelled/JobInterrupted to stop the job."""
        self.check()
        fraction = min(max(float(fraction), 0.0), 1.0)
        now = time.monotonic()
        changed = message is not None and message != self._last_message
        if not changed and fraction < 1.0 and now - self._last_write < PROGRESS_INTERVAL_S:
            return
        fields: dict[str, Any] = {"progress": fraction}
        if message is not None:
            fields["message"] = self._last_message = message
        record = self.container.catalog.update_job(self.job_id, **fields)
        self._last_write = now
        if record.spec.get(CANCEL_KEY):  # requested by another process (CLI, another server)
            self._cancel.set()
            raise JobCancelled(self.job_id)


def execute_job(
    container: Container,
    job_id: str,
    cancel: threading.Event | None = None,
    stopping: threading.Event | None = None,
) -> JobRecord:
    """Run one queued job to a terminal state (or back to queued on shutdown). Every backend
    calls this; it never raises for a job's own failure, which is recorded on the row."""
    catalog = container.catalog
    try:  # compare-and-set: a job cancelled while waiting, or taken by another worker, stays
        job = catalog.update_job(
            job_id, only_from={"queued"}, state="running", progress=0.0, message="started"
        )
    except ConflictError:
        return catalog.get_job(job_id)
    ctx = JobContext(container, job_id, cancel or threading.Event(), stopping)
    try:
        if job.spec.get(CANCEL_KEY):
            raise JobCancelled(job_id)
        check_pins(container, job.spec)
        outcome = get_job_kind(job.kind).run(container, job.spec, ctx)
    except JobCancelled:
        return catalog.update_job(job_id, state="cancelled", message="cancelled")
    except JobInterrupted:
        return catalog.update_job(
            job_id, state="queued", progress=0.0, message="interrupted by shutdown; resumes"
        )
    except HubError as exc:
        return catalog.update_job(
            job_id, state="failed", message="failed", error=f"{exc.code}: {exc.message}"
        )
    except Exception as exc:  # noqa: BLE001 - a job's bug must not kill the worker thread
        log.exception("job %s (%s) crashed", job_id, job.kind)
        return catalog.update_job(
            job_id, state="failed", message="failed", error=f"internal: {type(exc).__name__}: {exc}"
        )
    return catalog.update_job(
        job_id,
        state="succeeded",
        progress=1.0,
        message=outcome.message,
        result_version_id=outcome.result_version_id,
    )


# -- backends -----------------------------------------------------------------------------------
class JobBackend(Protocol):
    """Where queued jobs execute. ``submit`` must eventually call ``execute_job(container,
    job_id, ...)`` for the id (running a row twice is prevented by ``execute_job`` itself);
    ``request_cancel`` may only speed up what the catalog flag already does."""

    name: str

    def submit(self, job_id: str) -> None: ...

    def request_cancel(self, job_id: str) -> None: ...

    def shutdown(self, *, wait: bool = True) -> None: ...

    def status(self) -> dict[str, Any]:
        """For /health: at least ``ok`` (bool); backend-specific details besides."""
        ...


class InProcessBackend:
    """A thread pool inside the server process (the embedded default)."""

    name = "inprocess"

    def __init__(self, container: Container, workers: int) -> None:
        self.container, self.workers = container, workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loradex-job")
        self._cancel: dict[str, threading.Event] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def submit(self, job_id: str) -> None:
        with self._lock:
            event = self._cancel.setdefault(job_id, threading.Event())
        self._pool.submit(self._run, job_id, event)

    def _run(self, job_id: str, event: threading.Event) -> None:
        try:
            if not self._stopping.is_set():
                execute_job(self.container, job_id, event, self._stopping)
        except Exception:  # noqa: BLE001 - e.g. the catalog is unreachable; keep the pool alive
            log.exception("job %s could not be executed", job_id)
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)

    def request_cancel(self, job_id: str) -> None:
        with self._lock:
            event = self._cancel.get(job_id)
        if event is not None:
            event.set()

    def shutdown(self, *, wait: bool = True) -> None:
        # Running jobs stop at their next progress report and go back to queued, so the next
        # start resumes them; waiting ones stay queued in the catalog.
        self._stopping.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        with self._lock:
            active = len(self._cancel)
        ok = not self._stopping.is_set()
        return {"ok": ok, "workers": self.workers, "active": active}


BackendFactory = Callable[["Container"], JobBackend]


def _ray_backend(container: Container) -> JobBackend:
    from hub.services.jobs_ray import RayBackend  # Ray is optional and heavy: import on use

    return RayBackend(container)


JOB_BACKENDS: dict[str, BackendFactory] = {
    "inprocess": lambda c: InProcessBackend(c, c.settings.jobs_workers),
    "ray": _ray_backend,
}


def make_backend(container: Container) -> JobBackend:
    name = container.settings.jobs_backend
    try:
        factory = JOB_BACKENDS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown jobs backend {name!r}; known: {', '.join(sorted(JOB_BACKENDS))}",
            code="unknown_jobs_backend",
            known=sorted(JOB_BACKENDS),
        ) from None
    return factory(container)


# -- the service --------------------------------------------------------------------------------
@dataclass
class Recovery:
    failed: list[str]
    resumed: list[str]


class JobService:
    """Submit, inspect and cancel jobs. Only a started service executes anything: the CLI builds
    one just to list or cancel, the server starts one for its lifetime."""

    def __init__(self, container: Container, backend: JobBackend | None = None) -> None:
        self.container = container
        self._backend = backend
        self._started = False
        self._runner_lock: RunnerLock | None = None  # set by start(exclusive=...)
        self._watcher: QueueWatcher | None = None
        load_job_modules(container.settings.job_modules)

    @property
    def catalog(self) -> Catalog:
        return self.container.catalog

    @property
    def backend_name(self) -> str:
        return self._backend.name if self._backend else self.container.settings.jobs_backend

    def backend_status(self) -> dict[str, Any]:
        """``ok`` plus details from the running backend; not ok when nothing runs jobs."""
        if not self._started or self._backend is None:
            if self._runner_lock is not None:  # queue-only: is another process running jobs?
                return {"ok": self._runner_lock.held_elsewhere(), "started": False}
            return {"ok": False, "started": False}
        try:
            return {**self._backend.status(), "started": True}
        except Exception as exc:  # noqa: BLE001 - a health probe reports, it does not fail
            return {"ok": False, "started": True, "error": f"{type(exc).__name__}: {exc}"}

    def start(self, *, exclusive: Path | None = None) -> Recovery | None:
        """Recover from a previous crash, then start executing (idempotent).

        With ``exclusive`` (a lock file; what ``loradex serve`` passes), only the process that
        gets the lock does so and also runs jobs other processes queue (hub/services/
        jobs_runner.py); any other process returns None and only queues."""
        if self._started:
            return Recovery([], [])
        if exclusive is not None:
            self._runner_lock = RunnerLock(exclusive)
            if not self._runner_lock.try_acquire():
                return None
        if self._backend is None:
            self._backend = make_backend(self.container)
        recovery = self.recover()
        self._started = True
        if exclusive is not None:
            self._watcher = QueueWatcher(self.catalog, self._backend.submit)
        for job_id in recovery.resumed:
            self._hand_over(job_id)
        if self._watcher is not None:
            self._watcher.start()
        return recovery

    def _hand_over(self, job_id: str) -> None:
        assert self._backend is not None
        if self._watcher is None or self._watcher.mark(job_id):
            self._backend.submit(job_id)

    def recover(self) -> Recovery:
        failed = []
        for job in self._all("running"):
            self.catalog.update_job(job.id, state="failed", message="failed", error=RESTART_REASON)
            failed.append(job.id)
        # Oldest first: resume in submission order.
        queued = sorted(self._all("queued"), key=lambda j: j.created_at)
        return Recovery(failed, [j.id for j in queued])

    def _all(self, state: str) -> list[JobRecord]:
        return list(self.catalog.list_jobs(state, limit=1_000_000))

    def shutdown(self, *, wait: bool = True) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._backend is not None and self._started:
            self._backend.shutdown(wait=wait)
        self._started = False
        if self._runner_lock is not None:
            self._runner_lock.release()

    def submit(self, kind: str, spec: dict[str, Any]) -> JobRecord:
        job_kind = get_job_kind(kind)
        if job_kind.validate is not None:
            spec = job_kind.validate(self.container, dict(spec))
        record = self.catalog.create_job(kind, spec)
        if self._started and self._backend is not None:
            self._hand_over(record.id)
        return record

    def get(self, job_id: str) -> JobRecord:
        return self.catalog.get_job(job_id)

    def list(self, state: str | None = None, *, limit: int = 100) -> list[JobRecord]:
        return list(self.catalog.list_jobs(state, limit=limit))

    def cancel(self, job_id: str) -> JobRecord:
        """Queued: cancelled now. Running: flagged; it stops at its next progress report.
        Finished: ConflictError."""
        job = self.catalog.get_job(job_id)
        if job.state == "queued":
            try:
                return self.catalog.update_job(
                    job_id,
                    only_from={"queued"},
                    spec={**job.spec, CANCEL_KEY: True},
                    state="cancelled",
                    message="cancelled before it started",
                )
            except ConflictError:  # a worker took it meanwhile: flag it as a running job
                job = self.catalog.get_job(job_id)
        try:
            job = self.catalog.update_job(
                job_id,
                only_from=OPEN_JOB_STATES,
                spec={**job.spec, CANCEL_KEY: True},
                message="cancelling",
            )
        except ConflictError as exc:
            state = exc.details["state"]
            raise ConflictError(
                f"job {job_id} already {state}", code="job_finished", state=state
            ) from exc
        if self._backend is not None:
            self._backend.request_cancel(job_id)
        return job

    def wait(self, job_id: str, timeout: float = 60.0, interval: float = 0.05) -> JobRecord:
        """Poll until the job is terminal; after ``timeout`` the last record seen, whatever its
        state (tests, CLI)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while job.state not in TERMINAL_JOB_STATES and time.monotonic() < deadline:
            time.sleep(interval)
            job = self.get(job_id)
        return job
