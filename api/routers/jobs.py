"""``/jobs``: list, show (state, progress 0..1, message, result), cancel, and a server-sent
events stream of progress until the job ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.deps import JobsDep, ReadAccess, WriteAuth
from api.schemas import ERROR_RESPONSES, JobList
from hub.core.models import TERMINAL_JOB_STATES, JobRecord, JobState
from hub.services.jobs import JobService

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ERROR_RESPONSES)

JobId = Annotated[UUID, Path(description="Job id (from POST /merges and friends).")]
POLL_S = 0.2  # the stream polls the catalog: it works the same whatever backend runs the job
KEEPALIVE_S = 15.0  # a comment line keeps proxies from closing a quiet stream


@router.get("", dependencies=[ReadAccess])
def list_jobs(
    jobs: JobsDep,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    data = jobs.list(state, limit=limit)
    return JobList(data=data, count=len(data))


@router.get("/{job_id}", dependencies=[ReadAccess])
def get_job(job_id: JobId, jobs: JobsDep) -> JobRecord:
    return jobs.get(str(job_id))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: JobId, _: WriteAuth, jobs: JobsDep) -> JobRecord:
    """Queued jobs are cancelled at once; running ones stop at their next progress report."""
    return jobs.cancel(str(job_id))


@router.get(
    "/{job_id}/events",
    dependencies=[ReadAccess],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`job` events"}},
)
def job_events(job_id: JobId, request: Request, jobs: JobsDep) -> StreamingResponse:
    """One ``event: job`` (data: the job as JSON) per change; the stream ends after the job
    reaches succeeded, failed or cancelled."""
    first = jobs.get(str(job_id))  # 404 before the stream starts
    return StreamingResponse(
        _events(jobs, first, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(jobs: JobService, job: JobRecord, request: Request) -> AsyncIterator[str]:
    last, quiet_since = None, time.monotonic()
    while True:
        seen = (job.state, job.progress, job.message)
        if seen != last:
            last, quiet_since = seen, time.monotonic()
            yield f"event: job\ndata: {job.model_dump_json()}\n\n"
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
        if job.state in TERMINAL_JOB_STATES or await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)
        job = await run_in_threadpool(jobs.get, job.id)
