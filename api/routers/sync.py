"""``/sync``: submit a Hugging Face Hub pull or push job (validated up front, run by a worker)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import JobsDep, WriteAuth
from api.schemas import ERROR_RESPONSES, JobAccepted
from hub.services.sync_jobs import SyncJobSpec

router = APIRouter(prefix="/sync", tags=["sync"], responses=ERROR_RESPONSES)


@router.post("", status_code=202)
def submit_sync(body: SyncJobSpec, response: Response, _: WriteAuth, jobs: JobsDep) -> JobAccepted:
    """Queue a pull (``repos``, or filters ``base_model``/``author``/``search``/``tags``) or a
    push (``adapter`` to ``repo``). Malformed ids, nothing to pull, repos mixed with filters or
    an unknown adapter fail here with a 4xx; Hub errors end the job. Follow it at ``Location``;
    a finished pull's ``spec.report`` lists each repository's outcome."""
    job = jobs.submit("sync", body.model_dump(mode="json"))
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobAccepted(job_id=job.id, state=job.state)
