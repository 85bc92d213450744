"""Jinja2 rendering for the web catalog: one autoescaping environment, URL helpers, and the
security headers every page carries.

The Content-Security-Policy allows scripts, styles and images from this origin only: no inline
script and no inline style can run, so even a template bug that let markup through could not
execute it. The inline SVG plots use presentation attributes, never ``style``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

UI = "/ui"
STATIC = f"{UI}/static"
TEMPLATES = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def adapter_url(name: str, version: int | None = None) -> str:
    base = f"{UI}/adapters/{quote(name, safe='')}"
    return base if version is None else f"{base}/versions/{int(version)}"


def ref_url(ref: str) -> str:
    """``NAME@VERSION`` (a job result, a pinned merge input) -> its adapter page."""
    name, _, version = ref.partition("@")
    return adapter_url(name, int(version) if version.isdigit() else None)


def file_url(name: str, version: int, filename: str) -> str:
    """The REST download route (the web catalog links to the API, it does not copy it)."""
    return f"/adapters/{quote(name, safe='')}/versions/{int(version)}/files/{quote(filename)}"


def query_url(path: str, params: dict[str, Any], **changes: Any) -> str:
    """``path`` with ``params`` updated by ``changes``; None values are dropped."""
    merged = {**params, **changes}
    kept = [(k, v) for k, v in merged.items() if v is not None and v != ""]
    return f"{path}?{urlencode(kept, doseq=True)}" if kept else path


def filesize(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def when(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else ""


def number(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.{digits}g}"


def pretty_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, default=str)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,  # a missing variable is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        UI=UI,
        STATIC=STATIC,
        adapter_url=adapter_url,
        ref_url=ref_url,
        file_url=file_url,
        query_url=query_url,
    )
    env.filters.update(filesize=filesize, when=when, number=number, pretty_json=pretty_json)
    return env


ENV = _environment()


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
