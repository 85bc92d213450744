"""The web catalog: server-rendered pages (Jinja2) plus a small script, served by the API's app.

``mount(app)`` adds the pages under ``/ui`` (``/`` redirects there) and the static assets under
``/ui/static``. The app factory calls it by module name: ``api`` and ``web`` are sibling delivery
layers that never import each other.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from web.render import STATIC, STATIC_DIR


def mount(app: FastAPI) -> None:
    from web import pages_catalog, pages_jobs

    # Static files first: the pages router ends with a catch-all 404 page for /ui/*.
    app.mount(STATIC, StaticFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(pages_catalog.router)
    app.include_router(pages_jobs.router)


__all__ = ["mount"]
