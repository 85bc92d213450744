"""``/mixtures``: submit an X-LoRA mixture job (validated up front, trained by a worker)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ContainerDep, JobsDep, WriteAuth
from api.schemas import ERROR_RESPONSES, JobAccepted, MixtureRequest

router = APIRouter(prefix="/mixtures", tags=["mixtures"], responses=ERROR_RESPONSES)


@router.post("", status_code=202)
def submit_mixture(
    body: MixtureRequest, response: Response, _: WriteAuth, jobs: JobsDep, c: ContainerDep
) -> JobAccepted:
    """Queue a mixture: too few, repeated or mixture experts, experts on different base models
    and experts without a training task fail here with a 4xx. ``tasks`` are zoo task names: the
    server never reads a file path sent over REST (use the CLI for task files). Follow the job at
    ``Location``; its result is the mixture (``source: mixture``, lineage ``mixture``)."""
    spec = body.model_dump(mode="json")
    spec["tasks"] = c.mixtures.zoo_tasks_only(body.tasks)
    job = jobs.submit("mixture", spec)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobAccepted(job_id=job.id, state=job.state)
