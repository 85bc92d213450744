"""One job runner per data directory, and jobs queued by other processes.

``loradex serve --processes N`` runs N HTTP worker processes over one catalog. Exactly one of
them may recover and run jobs (restart recovery fails every ``running`` row, which is only
right if nobody else is running them), so each process tries :class:`RunnerLock` — an
exclusive ``flock`` on ``<home>/jobs.lock`` held for the process's lifetime — and the winner
starts the job backend; the others only queue (they write ``queued`` rows). The OS drops the
lock when its holder dies, and the next process to start takes it over.

The runner's :class:`QueueWatcher` picks those rows up: every ``interval_s`` it lists queued
jobs and hands the ones it has not handed over yet to the backend. Double hand-over is harmless
anyway (``execute_job`` runs only a row it moves from ``queued`` to ``running``), but it is
avoided: the service marks what it submits itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

if TYPE_CHECKING:
    from storage.catalog import Catalog

log = logging.getLogger(__name__)

POLL_S = 0.5


class RunnerLock:
    """Exclusive, non-blocking, process-lifetime lock on ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path), thread_local=False)

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def held_elsewhere(self) -> bool:
        """True when another process holds it (probed with a try-and-release)."""
        if self.held:
            return False
        if self.try_acquire():
            self._lock.release()
            return False
        return True

    def release(self) -> None:
        if self.held:
            self._lock.release(force=True)


class QueueWatcher:
    """Hands queued jobs that someone else created to ``submit``."""

    def __init__(
        self, catalog: Catalog, submit: Callable[[str], None], interval_s: float = POLL_S
    ) -> None:
        self.catalog, self._submit, self.interval_s = catalog, submit, interval_s
        self._handed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loradex-queue", daemon=True)

    def mark(self, job_id: str) -> bool:
        """Record ``job_id`` as handed over; False if it already was."""
        with self._lock:
            if job_id in self._handed:
                return False
            self._handed.add(job_id)
            return True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - e.g. the catalog blinked; try again next tick
                log.exception("polling queued jobs failed")

    def poll(self) -> list[str]:
        """One tick: hand over new queued jobs, oldest first; forget ids no longer queued."""
        queued = sorted(self.catalog.list_jobs("queued", limit=10_000), key=lambda j: j.created_at)
        ids = [j.id for j in queued]
        with self._lock:
            self._handed &= set(ids)  # picked up (running or finished): the set stays small
        new = [job_id for job_id in ids if self.mark(job_id)]
        for job_id in new:
            self._submit(job_id)
        return new
