"""JSON request bodies with a key given twice in one object are refused, not resolved.

Python's JSON reader (and so FastAPI) keeps the last of two equal keys without a word, so a
hand-written ``{"params": {"rank": 4, "rank": 8}}`` would merge at rank 8, and which of the two
was meant is anyone's guess. This middleware checks ``application/json`` bodies before the route
reads them and answers 422 ``invalid_request`` naming the key and where it sits; other bodies,
and JSON that does not parse (the route's own 422 reports that), pass through untouched.
"""

from __future__ import annotations

import json
from typing import NoReturn

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from hub.core.json_input import JSON_ERRORS, unique_keys


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _repeated(key: str) -> NoReturn:
    raise _DuplicateKey(key)


def duplicate_key(body: bytes) -> str | None:
    """The first key found twice in one object of ``body``; None when there is none, or when the
    body is not JSON at all."""
    try:
        json.loads(body, object_pairs_hook=unique_keys(_repeated))
    except _DuplicateKey as exc:
        return exc.key
    except JSON_ERRORS:  # not JSON, not UTF-8, or nested too deep: the route reports it
        return None
    return None


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class RejectDuplicateJsonKeys:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks, messages = [], []
        while True:  # the route would read the whole body anyway
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        key = duplicate_key(b"".join(chunks))
        if key is not None:
            response = error_response(
                422,
                "invalid_request",
                f"body: key {key!r} appears twice in one JSON object; give it once",
                {"errors": [{"loc": ["body"], "msg": f"duplicate key {key!r}"}]},
            )
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
