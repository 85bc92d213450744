"""HEAD for every GET route (RFC 9110 §9.3.2: a server that serves GET should serve HEAD).

FastAPI's routes answer only the methods they declare, so ``curl -I``, link checkers and load
balancers' health probes got 405 on every page and resource. Starlette's plain ``Route`` adds
HEAD by itself; this restores that for the API's routes: a HEAD request is run as the GET it
mirrors (same status and headers, ``Content-Length`` included) and the body is dropped."""

from __future__ import annotations

from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def route_serves(router: Any, scope: Scope, method: str) -> bool:
    """Whether some route of ``router`` fully matches ``scope``'s path for ``method``: asked of
    the routes as a request would be (included routers expose no ``methods`` to read)."""
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] is Match.FULL for route in router.routes)


class HeadAsGet:
    """ASGI middleware: HEAD on a path that some route serves with GET runs that GET handler
    without sending its body. Paths with no GET route keep the router's own 404/405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or not self._serves_get(scope):
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                # Keep one empty, final body message: the server needs it to end the response.
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)

    def _serves_get(self, scope: Scope) -> bool:
        router = getattr(scope.get("app"), "router", None)
        return router is not None and route_serves(router, scope, "GET")
