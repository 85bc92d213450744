"""The merge form, the job list and the live job page.

The form does not post to this server's pages: ``loradex.js`` sends it to the REST API
(``POST /merges`` with the bearer token the user saved) and then opens the job page, which
follows ``GET /jobs/{id}/events`` (falling back to polling ``GET /jobs/{id}``).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from hub.core.errors import HubError, NotFoundError
from hub.core.models import TERMINAL_JOB_STATES, JobState
from hub.core.names import AdapterRef
from hub.services.methods import describe_methods
from web.deps import ContainerDep, HtmlErrorRoute, JobsDep, ReadAccess
from web.merge_form import adapter_choices, method_forms
from web.render import UI, render

router = APIRouter(route_class=HtmlErrorRoute, include_in_schema=False)


def _valid_refs(raw: list[str]) -> list[str]:
    refs = []
    for text in raw[:64]:
        try:
            refs.append(str(AdapterRef.parse(text)))
        except HubError:
            continue  # a bad name in the query string just is not preselected
    return refs


@router.get(f"{UI}/merge", dependencies=[ReadAccess], response_class=HTMLResponse)
async def merge_form(
    request: Request,
    container: ContainerDep,
    adapters: Annotated[list[str], Query(max_length=64)] = [],  # noqa: B006 - FastAPI idiom
    method: Annotated[str, Query(max_length=64)] = "svd",
) -> Response:
    # describe_methods imports the merging package (torch) the first time: off the event loop.
    methods = await run_in_threadpool(describe_methods)
    items, _ = await run_in_threadpool(container.registry.ls, limit=10_000)
    chosen = _valid_refs(adapters)
    known = {m["name"] for m in methods}
    return render(
        request,
        "merge.html",
        methods=method_forms(methods),
        method=method if method in known else "svd",
        options=adapter_choices(items, chosen),
        merge_adapters=chosen,
    )


@router.get(f"{UI}/jobs", dependencies=[ReadAccess], response_class=HTMLResponse)
def job_list(
    request: Request,
    jobs: JobsDep,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    return render(request, "jobs.html", jobs=jobs.list(state, limit=limit), state=state)


@router.get(f"{UI}/jobs/{{job_id}}", dependencies=[ReadAccess], response_class=HTMLResponse)
def job_page(request: Request, job_id: Annotated[UUID, Path()], jobs: JobsDep) -> Response:
    job = jobs.get(str(job_id))
    return render(request, "job.html", job=job, terminal=job.state in TERMINAL_JOB_STATES)


@router.get(f"{UI}/{{path:path}}", response_class=HTMLResponse)
def not_found(request: Request, path: str) -> Response:
    """Any other /ui address: an HTML 404 rather than the API's JSON one."""
    raise NotFoundError(f"no page at {UI}/{path}")
