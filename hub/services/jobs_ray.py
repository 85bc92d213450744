"""The Ray job backend (``jobs_backend = "ray"``): each job is one Ray task on a cluster.

The task runs the same :func:`hub.services.jobs.execute_job` as the in-process pool, inside a
Ray worker: it builds a Container from the server's settings (plain JSON) and gets the job id,
nothing else — adapters travel through the shared catalog and blob store, never through Ray's
object store (the store of a private local instance is kept small for that reason).

Where the cluster is (setting ``ray_address``): unset, the server starts a private local Ray
instance with ``jobs_workers`` CPUs and stops it on exit; ``auto``, ``HOST:6379`` or
``ray://HOST:10001`` connect to an existing cluster. Every node then needs loradex installed
(same version) and must reach the same catalog (PostgreSQL) and blob directory (a shared
filesystem): the task opens exactly the settings the server has.

GPUs: a job whose kind declares ``wants_gpu`` (merges) is submitted with ``num_gpus=1`` when
the cluster has GPUs, unless its spec pins ``"device": "cpu"``; Ray then sets
``CUDA_VISIBLE_DEVICES`` for the task and ``device: auto`` picks the GPU.

Progress and cancellation go through the catalog as with every backend. Cancelling a running
job flags its row (``JobService.cancel``); the task's watcher thread reads that flag every
``CANCEL_POLL_S`` (which also covers ``loradex jobs cancel`` from another process), and the
server additionally interrupts the task with ``ray.cancel`` so it reacts at once. The job body
runs in a thread of the task, so the interrupt lands in the supervising main thread, never in
the middle of a catalog write.

Restart recovery: Ray ties a task's life to the driver that submitted it (the server), so a
crashed server's tasks die with it; the next start then finds their rows ``running`` and fails
them (``job_interrupted``), and resubmits ``queued`` ones — the in-process semantics. A
graceful shutdown interrupts running tasks (they go back to ``queued`` at their next progress
report, so the next start resumes them) and waits up to ``SHUTDOWN_WAIT_S`` for them. A task
that dies without finishing its row (worker crash, node loss, OOM kill) is not retried
(``max_retries=0``: a half-run job must not run twice); the server's monitor thread marks its
job failed with Ray's reason.

Pickle: Ray moves task arguments and results between its own trusted processes with
(cloud)pickle. Only the settings JSON, a job id and a state string cross it; adapter files are
never unpickled anywhere (they are parsed as safetensors by the same validator as uploads).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from hub.core.errors import StorageError
from hub.core.models import TERMINAL_JOB_STATES
from hub.services.job_kinds import get_job_kind, job_wants_gpu, load_job_modules
from hub.services.jobs import CANCEL_KEY, execute_job

if TYPE_CHECKING:
    from hub.services.container import Container

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5  # a task re-reads its job's cancel flag this often
MONITOR_INTERVAL_S = 1.0  # the server reaps finished tasks and refreshes cluster figures
SHUTDOWN_WAIT_S = 30.0
LOCAL_OBJECT_STORE_BYTES = 128 << 20  # only ids and strings go through it


class RayUnavailableError(StorageError):
    """Ray is not installed, or the cluster cannot be started or reached."""

    code = "ray_unavailable"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "jobs_backend = ray needs Ray: pip install 'loradex[ray]'"
        ) from None
    return ray


# -- inside a Ray worker ------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _worker_container(settings_json: str) -> Container:
    """One Container per settings per worker process: Ray reuses workers between tasks."""
    from hub.config import Settings
    from hub.services.container import Container

    settings = Settings(**json.loads(settings_json))
    load_job_modules(settings.job_modules)
    return Container(settings)


def run_job_task(settings_json: str, job_id: str) -> str:
    """The Ray task: run one job to a terminal state (or back to queued); returns the state."""
    container = _worker_container(settings_json)
    cancel, stopping, wake, done = (threading.Event() for _ in range(4))
    outcome: dict[str, str] = {}

    def body() -> None:
        try:
            outcome["state"] = execute_job(container, job_id, cancel, stopping).state
        finally:
            done.set()
            wake.set()

    threading.Thread(target=body, name=f"loradex-job-{job_id}", daemon=True).start()
    threading.Thread(
        target=_watch_flags,
        args=(container, job_id, cancel, stopping, wake, done),
        name=f"loradex-job-watch-{job_id}",
        daemon=True,
    ).start()
    # Wait on an Event, not Thread.join: on Python 3.11 a KeyboardInterrupt landing inside
    # join() can leave the thread marked as stopped while it still runs.
    while True:
        try:
            while not done.wait(0.1):
                pass
            return outcome.get("state", "unknown")
        except KeyboardInterrupt:  # ray.cancel(): the watcher decides cancel vs. shutdown
            wake.set()


def _watch_flags(
    container: Container,
    job_id: str,
    cancel: threading.Event,
    stopping: threading.Event,
    wake: threading.Event,
    done: threading.Event,
) -> None:
    """Until the job ends: a cancel flag in the catalog cancels it; an interrupt without one
    (the server is shutting down) stops it so that it is requeued."""
    while not done.is_set():
        interrupted = wake.wait(CANCEL_POLL_S)
        wake.clear()
        if done.is_set():
            return
        try:
            flagged = bool(container.catalog.get_job(job_id).spec.get(CANCEL_KEY))
        except Exception:  # noqa: BLE001 - a flaky read must not end the watch
            log.exception("job %s: reading the cancel flag failed", job_id)
            flagged = False
        if flagged:
            cancel.set()
        elif interrupted:
            stopping.set()


# -- inside the server (the Ray driver) ---------------------------------------------------------
class RayBackend:
    """Submits one Ray task per job and watches the tasks it submitted."""

    name = "ray"

    def __init__(self, container: Container) -> None:
        self.container = container
        self._ray = ray = _import_ray()
        settings = container.settings
        self.address = settings.ray_address
        self._settings_json = settings.model_dump_json()
        self._connect(ray, settings.jobs_workers)
        self._task = ray.remote(max_retries=0)(run_job_task)
        self._refs: dict[str, Any] = {}  # job id -> ObjectRef of its task
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._counts = {"submitted": 0, "finished": 0, "lost": 0}
        self._resources: dict[str, float] = {}
        self._cluster_error: str | None = None
        self._refresh_resources()
        self._monitor = threading.Thread(target=self._watch, name="loradex-ray-monitor")
        self._monitor.daemon = True
        self._monitor.start()

    def _connect(self, ray: Any, local_cpus: int) -> None:
        if ray.is_initialized():  # embedding apps may have connected already
            self._initialized_here = False
            return
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "namespace": "loradex",
        }
        if self.address is None:  # a private local instance, stopped with the server
            kwargs.update(num_cpus=local_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        else:
            kwargs.pop("include_dashboard")  # a connecting client does not start one
        try:
            ray.init(address=self.address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray raises many types for "cannot connect"
            where = self.address or "a local instance"
            raise RayUnavailableError(
                f"cannot start or reach Ray at {where}: {type(exc).__name__}: {exc}"
            ) from None
        self._initialized_here = True
        if self.address is not None and self.container.catalog.dialect == "sqlite":
            log.warning(
                "jobs on the Ray cluster %s open the SQLite catalog %s: only nodes that share "
                "this file system can run them (use PostgreSQL for a real cluster)",
                self.address,
                self.container.settings.resolved_database_url,
            )

    # -- JobBackend -----------------------------------------------------------------------------
    def submit(self, job_id: str) -> None:
        if self._closing.is_set():
            return  # stays queued in the catalog; the next start resumes it
        job = self.container.catalog.get_job(job_id)
        options: dict[str, Any] = {"name": f"loradex-{job.kind}-{job_id}"}
        if self._resources.get("GPU", 0) > 0 and job_wants_gpu(get_job_kind(job.kind), job.spec):
            options["num_gpus"] = 1
        try:
            ref = self._task.options(**options).remote(self._settings_json, job_id)
        except Exception as exc:  # noqa: BLE001 - the cluster is gone: say so on the job
            self._fail_if_unfinished(job_id, exc, code="ray_unavailable")
            return
        with self._lock:
            self._refs[job_id] = ref
            self._counts["submitted"] += 1

    def request_cancel(self, job_id: str) -> None:
        with self._lock:
            ref = self._refs.get(job_id)
        if ref is not None:  # the flag is already in the catalog; this only makes it prompt
            self._ray.cancel(ref, force=False)

    def shutdown(self, *, wait: bool = True) -> None:
        self._closing.set()
        with self._lock:
            refs = list(self._refs.values())
        for ref in refs:  # running tasks requeue their job; waiting ones never start
            self._ray.cancel(ref, force=False)
        if wait and refs:
            self._ray.wait(refs, num_returns=len(refs), timeout=SHUTDOWN_WAIT_S)
        self._monitor.join(timeout=2 * MONITOR_INTERVAL_S)
        if self._initialized_here:  # a private instance stops; a cluster connection closes
            self._ray.shutdown()

    def status(self) -> dict[str, Any]:
        with self._lock:
            active, counts = len(self._refs), dict(self._counts)
        return {
            "ok": self._ray.is_initialized()
            and not self._closing.is_set()
            and self._cluster_error is None,
            "cluster_error": self._cluster_error,
            "address": self.address or "local",
            "resources": dict(self._resources),
            "active": active,
            **counts,
        }

    # -- the monitor thread -----------------------------------------------------------------------
    def _watch(self) -> None:
        last_refresh = time.monotonic()
        while not self._closing.is_set():
            try:
                self._watch_once()
            except Exception:  # noqa: BLE001 - e.g. the cluster went away; keep watching
                log.exception("watching Ray tasks failed")
                self._closing.wait(MONITOR_INTERVAL_S)
            if time.monotonic() - last_refresh > 5 * MONITOR_INTERVAL_S:
                self._refresh_resources()
                last_refresh = time.monotonic()

    def _watch_once(self) -> None:
        with self._lock:
            pending = dict(self._refs)
        if not pending:
            self._closing.wait(MONITOR_INTERVAL_S)
            return
        ready, _ = self._ray.wait(
            list(pending.values()),
            num_returns=len(pending),
            timeout=MONITOR_INTERVAL_S,
            fetch_local=False,
        )
        done = set(ready)
        self._reap({j: r for j, r in pending.items() if r in done})

    def _reap(self, finished: dict[str, Any]) -> None:
        for job_id, ref in finished.items():
            try:
                self._ray.get(ref, timeout=0)
            except self._ray.exceptions.TaskCancelledError:
                pass  # we interrupted it (cancel or shutdown); the row says what happened
            except Exception as exc:  # noqa: BLE001 - any other Ray error: the task is gone
                self._fail_if_unfinished(job_id, exc)
            with self._lock:
                self._refs.pop(job_id, None)
                self._counts["finished"] += 1

    def _fail_if_unfinished(
        self, job_id: str, exc: BaseException, code: str = "ray_task_lost"
    ) -> None:
        catalog = self.container.catalog
        try:
            job = catalog.get_job(job_id)
            if job.state in TERMINAL_JOB_STATES:
                return
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            catalog.update_job(
                job_id,
                state="failed",
                message="failed",
                error=f"{code}: {type(exc).__name__}: {reason}"[:2000],
            )
            with self._lock:
                self._counts["lost"] += 1
        except Exception:  # noqa: BLE001 - keep monitoring the other tasks
            log.exception("job %s: recording the loss of its Ray task failed", job_id)

    def _refresh_resources(self) -> None:
        try:
            resources = self._ray.cluster_resources()
        except Exception as exc:  # noqa: BLE001 - reported through status()
            log.warning("cannot read Ray cluster resources: %s", exc)
            self._cluster_error = f"{type(exc).__name__}: {exc}"[:500]
            return
        self._cluster_error = None
        self._resources = {
            k: float(v) for k, v in resources.items() if k in ("CPU", "GPU", "memory")
        }
