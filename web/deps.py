"""What web handlers need from the app (the container, jobs, tokens) and the HTML error path.

The web catalog is a sibling of ``api`` (import-linter keeps the two independent), so it reads
the services the app factory put on ``app.state`` itself, and renders errors as pages: a route
class catches the HubError tree and request-validation errors of its handlers and answers an
HTML page with the status the REST API would have used.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from hub.core.errors import HubError
from hub.services.container import Container
from hub.services.jobs import JobService
from web.render import render

STATUS_BY_KIND = {"bad_input": 400, "not_found": 404, "conflict": 409, "failure": 500}
STATUS_BY_CODE = {"unauthorized": 401, "payload_too_large": 413}
TOKEN_COOKIE = "loradex_token"  # set by loradex.js from the token the user saved


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def get_jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


ContainerDep = Annotated[Container, Depends(get_container)]
JobsDep = Annotated[JobService, Depends(get_jobs)]


async def read_access(request: Request, container: ContainerDep) -> None:
    """Pages are reads: open unless ``api_read_requires_token`` closes reads. A browser's page
    navigation cannot send an Authorization header, so the token may also come as a cookie
    (only for reads; writes go through the REST API with the header)."""
    if not container.settings.api_read_requires_token:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    token = token or request.cookies.get(TOKEN_COOKIE, "")
    await run_in_threadpool(request.app.state.tokens.verify, token or None)


ReadAccess = Depends(read_access)


def status_for(exc: HubError) -> int:
    return STATUS_BY_CODE.get(exc.code, STATUS_BY_KIND.get(exc.kind, 500))


def error_page(request: Request, status: int, code: str, message: str) -> Response:
    return render(request, "error.html", status, status=status, code=code, message=message)


class HtmlErrorRoute(APIRoute):
    """An APIRoute whose HubError and validation failures become HTML error pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_error_pages(request: Request) -> Response:
            try:
                return await handler(request)
            except HubError as exc:
                return error_page(request, status_for(exc), exc.code, exc.message)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                    for e in exc.errors()[:5]
                )
                return error_page(request, 422, "invalid_request", problems or "invalid request")

        return with_error_pages
