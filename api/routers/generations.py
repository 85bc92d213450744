"""``/generations``: submit an SG-LoRA generation job (validated up front, run by a worker)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import JobsDep, WriteAuth
from api.schemas import ERROR_RESPONSES, JobAccepted
from hub.services.generation_jobs import GenerationRequest

router = APIRouter(prefix="/generations", tags=["generations"], responses=ERROR_RESPONSES)


@router.post("", status_code=202)
def submit_generation(
    body: GenerationRequest, response: Response, _: WriteAuth, jobs: JobsDep
) -> JobAccepted:
    """Queue the generation of an adapter for an unseen task from its description alone.
    A base model without experts, an untrained generator or a k larger than its expert count
    fail here with a 4xx. Follow the job at ``Location``; its result is the new adapter."""
    job = jobs.submit("generation", body.model_dump(mode="json"))
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobAccepted(job_id=job.id, state=job.state)
