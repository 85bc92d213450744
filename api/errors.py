"""The one place that maps errors to HTTP: the HubError tree, FastAPI's request validation and
Starlette's own 404/405 all answer ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.head import route_serves
from hub.core.errors import BadInputError, HubError

log = logging.getLogger(__name__)

STATUS_BY_KIND = {"bad_input": 400, "not_found": 404, "conflict": 409, "failure": 500}
# Codes whose HTTP meaning is more specific than their kind's.
STATUS_BY_CODE = {"unauthorized": 401, "payload_too_large": 413}
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class PayloadTooLargeError(BadInputError):
    code = "payload_too_large"


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None, **kw: Any
) -> JSONResponse:
    # details come from error constructors (paths, numbers...): make them JSON, never fail here.
    safe = json.loads(json.dumps(details or {}, default=str))
    body = {"error": {"code": code, "message": message, "details": safe}}
    return JSONResponse(body, status_code=status, **kw)


def status_for(exc: HubError) -> int:
    return STATUS_BY_CODE.get(exc.code, STATUS_BY_KIND.get(exc.kind, 500))


async def _hub_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HubError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, exc.code, exc.message, exc.details, headers=headers)


def _problems(errors: Any) -> list[dict[str, Any]]:
    # Only loc/msg/type: "input" may hold raw bytes and "ctx" exception objects.
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")}
        for e in errors
    ]


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    problems = _problems(exc.errors())
    summary = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems[:5])
    return error_response(
        422, "invalid_request", summary or "invalid request", {"errors": problems}
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves on this path. Starlette's own 405 names only the first
    matching route's methods (GET and POST /adapters are separate routes), and routes of
    included routers expose no ``methods`` in recent FastAPI, so each method is asked of the
    router as a request would: a full match means it is served here."""
    allowed = [m for m in _METHODS if route_serves(request.app.router, request.scope, m)]
    if "GET" in allowed and "HEAD" not in allowed:  # api.head.HeadAsGet serves it
        allowed.append("HEAD")
    return ", ".join(sorted(allowed))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", f"internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HubError, _hub_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
