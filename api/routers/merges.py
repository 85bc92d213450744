"""``/merges``: submit a merge job (validated up front, merged by a worker)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import JobsDep, WriteAuth
from api.schemas import ERROR_RESPONSES, JobAccepted, MergeRequest

router = APIRouter(prefix="/merges", tags=["merges"], responses=ERROR_RESPONSES)


@router.post("", status_code=202)
def submit_merge(
    body: MergeRequest, response: Response, _: WriteAuth, jobs: JobsDep
) -> JobAccepted:
    """Queue a merge; unknown methods or adapters and bad params fail here with a 4xx. Follow
    the job at ``Location`` (``GET /jobs/{id}`` or its ``/events`` stream)."""
    # python mode: a NaN weight reaches the engine's check (weights_not_finite) instead of
    # turning into null on the way (the stored spec is JSON-dumped after validation)
    job = jobs.submit("merge", body.model_dump())
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobAccepted(job_id=job.id, state=job.state)
