"""``/health``: liveness plus a catalog round trip (always open: load balancers probe it)."""

from __future__ import annotations

from fastapi import APIRouter

import hub
from api.deps import JobsDep, RegistryDep
from api.schemas import ERROR_RESPONSES, Health

router = APIRouter(tags=["health"], responses=ERROR_RESPONSES)


@router.get("/health")
def health(registry: RegistryDep, jobs: JobsDep) -> Health:
    registry.ls(limit=1)  # raises (-> 500 with the error body) when the catalog is unreachable
    return Health(version=hub.__version__, jobs_backend=jobs.backend_name)
