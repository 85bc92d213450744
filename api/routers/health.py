"""``/health``: liveness, a catalog round trip and the jobs backend's state (always open: load
balancers probe it). An unreachable catalog is an error (500 with the error body); a jobs
backend that cannot run jobs (not started, Ray unreachable) answers 200 with ``degraded``."""

from __future__ import annotations

from fastapi import APIRouter

import hub
from api.deps import ContainerDep, JobsDep
from api.schemas import ERROR_RESPONSES, DatabaseHealth, Health, JobsHealth

router = APIRouter(tags=["health"], responses=ERROR_RESPONSES)


@router.get("/health")
def health(container: ContainerDep, jobs: JobsDep) -> Health:
    catalog = container.catalog
    catalog.ping()  # raises (-> 500 with the error body) when the catalog is unreachable
    status = jobs.backend_status()
    ok = bool(status.pop("ok", False))
    return Health(
        status="ok" if ok else "degraded",
        version=hub.__version__,
        jobs_backend=jobs.backend_name,
        database=DatabaseHealth(ok=True, dialect=catalog.dialect),
        jobs=JobsHealth(ok=ok, backend=jobs.backend_name, details=status),
    )
