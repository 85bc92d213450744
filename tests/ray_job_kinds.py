"""Job kinds for the Ray backend tests, loaded through the ``job_modules`` setting by the
server *and* by every Ray worker (the way a plugin's kinds reach a cluster).

``test.gated`` holds a worker until a file appears (a gate another process can open) and
reports the worker's pid; ``test.dies`` kills its worker process, like an OOM kill would.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.jobs import JobContext


def _gated(_container, spec, ctx: JobContext) -> JobOutcome:
    ctx.progress(0.1, "waiting at the gate")
    gate = Path(spec["gate"])
    while not gate.exists():
        ctx.check()  # only in-memory flags: cancellation must reach this worker by itself
        time.sleep(0.02)
    return JobOutcome(None, f"gate opened in pid {os.getpid()}")


def _dies(_container, _spec, ctx: JobContext) -> JobOutcome:
    ctx.progress(0.5, "about to die")
    os._exit(3)


register_job_kind(JobKind("test.gated", _gated), replace=True)
register_job_kind(JobKind("test.dies", _dies), replace=True)
