"""Dependencies with ``Annotated`` aliases: services from the app's container, and auth."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.config import Settings
from hub.services.container import Container
from hub.services.jobs import JobService
from hub.services.registry import RegistryService
from hub.services.tokens import TokenRecord, TokenService


# Dependencies that do no I/O are ``async def``: FastAPI runs plain ``def`` ones in the thread
# pool, and a hop there per dependency per request costs more than the work itself.
async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


async def get_tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


ContainerDep = Annotated[Container, Depends(get_container)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]


async def get_settings(container: ContainerDep) -> Settings:
    return container.settings


async def get_registry(container: ContainerDep) -> RegistryService:
    registry: RegistryService = container.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[RegistryService, Depends(get_registry)]

# auto_error=False: a missing or non-Bearer header must give our 401 body, not FastAPI's.
bearer = HTTPBearer(auto_error=False, description="A token from `loradex token create`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_token(tokens: TokensDep, credentials: Credentials) -> TokenRecord:
    """Writes: a valid, unrevoked bearer token or 401."""
    return tokens.verify(credentials.credentials if credentials else None)


async def read_access(request: Request, settings: SettingsDep, tokens: TokensDep) -> None:
    """Reads: open unless ``api_read_requires_token`` closes them. The header is read by hand
    so that open reads are not advertised as secured in the OpenAPI spec."""
    if settings.api_read_requires_token:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        await run_in_threadpool(
            tokens.verify, token.strip() if scheme.lower() == "bearer" else None
        )


WriteAuth = Annotated[TokenRecord, Depends(require_token)]
ReadAccess = Depends(read_access)


def _query_params(dependant: Dependant) -> dict[str, bool]:
    """Each query parameter's name -> whether it takes several values (a list-typed one)."""
    params = {
        param.alias: _takes_many(param.field_info.annotation) for param in dependant.query_params
    }
    for sub in dependant.dependencies:
        params.update(_query_params(sub))
    return params


def _takes_many(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, UnionType):  # list[str] | None
        return any(_takes_many(arg) for arg in get_args(annotation))
    return get_origin(annotation) in (list, tuple, set, frozenset)


_QUERY_PARAMS_ATTR = "_loradex_query_params"  # cached on the route object itself: an id()-keyed
# cache could hand a new route (tests build many apps) the parameters of a collected one


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take, or a single-valued one given twice.
    FastAPI ignores an unknown one and keeps the last value of a repeated one, so a filter typo
    (``GET /adapters?tags=sql`` for ``tag``) would answer with the unfiltered list and
    ``?tag=a&tag=b`` with the ``b`` list alone."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known: dict[str, bool] | None = getattr(route, _QUERY_PARAMS_ATTR, None)
    if known is None:
        known = _query_params(route.dependant)
        setattr(route, _QUERY_PARAMS_ATTR, known)
    query = request.query_params
    if not query:
        return
    errors = []
    for key in dict.fromkeys(query):
        if key not in known:
            takes = ", ".join(sorted(known)) or "none"
            msg = f"unknown query parameter (this route takes: {takes})"
            errors.append(_problem("extra_forbidden", key, msg, query[key]))
        elif not known[key] and len(values := query.getlist(key)) > 1:
            msg = "query parameter given more than once; it takes one value"
            errors.append(_problem("too_many_values", key, msg, values))
    if errors:
        raise RequestValidationError(errors)


def _problem(kind: str, key: str, msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": ("query", key), "msg": msg, "input": value}


StrictQuery = Depends(reject_unknown_query)
