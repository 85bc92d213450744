"""``/transfers``: submit a Trans-LoRA transfer job (validated up front, run by a worker)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import JobsDep, WriteAuth
from api.schemas import ERROR_RESPONSES, JobAccepted, TransferRequest

router = APIRouter(prefix="/transfers", tags=["transfers"], responses=ERROR_RESPONSES)


@router.post("", status_code=202)
def submit_transfer(
    body: TransferRequest, response: Response, _: WriteAuth, jobs: JobsDep
) -> JobAccepted:
    """Queue a transfer of an adapter to another base model; an unknown adapter or target, the
    adapter's own base model as target, a missing task or too few seed examples fail here with a
    4xx. Follow the job at ``Location`` (``GET /jobs/{id}`` or its ``/events`` stream)."""
    job = jobs.submit("transfer", body.model_dump(mode="json"))
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobAccepted(job_id=job.id, state=job.state)
