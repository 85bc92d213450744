"""``/merges``: submit a merge job (validated up front, merged by a worker)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from api.deps import ContainerDep, JobsDep, WriteAuth
from api.schemas import ERROR_RESPONSES, JobAccepted, MergePlanResponse, MergeRequest
from hub.services.merge_jobs import plan_merge

router = APIRouter(prefix="/merges", tags=["merges"], responses=ERROR_RESPONSES)


@router.post(
    "",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": MergePlanResponse, "description": "Dry run: what it would do"}},
)
def submit_merge(
    body: MergeRequest,
    response: Response,
    _: WriteAuth,
    jobs: JobsDep,
    container: ContainerDep,
    dry_run: Annotated[
        bool,
        Query(description="Only check the merge (200, what it would produce); queue nothing."),
    ] = False,
) -> JobAccepted | JSONResponse:
    """Queue a merge; unknown methods or adapters and bad params fail here with a 4xx. Follow
    the job at ``Location`` (``GET /jobs/{id}`` or its ``/events`` stream). With
    ``?dry_run=true``: the same checks, and what the merge would produce (200); no job."""
    if dry_run:  # a plain response: the route's model (JobAccepted) describes its 202 alone
        plan = MergePlanResponse(**plan_merge(container, body).to_dict())
        return JSONResponse(plan.model_dump(mode="json"))
    # python mode: a NaN weight reaches the engine's check (weights_not_finite) instead of
    # turning into null on the way (the stored spec is JSON-dumped after validation)
    job = jobs.submit("merge", body.model_dump())
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobAccepted(job_id=job.id, state=job.state)
