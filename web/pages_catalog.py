"""Catalog pages: browse with facets and paging, search, and the adapter page."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hub.core.errors import HubError
from hub.core.names import AdapterRef, validate_name
from hub.services.browse import FACET_LABELS, BrowseFilters
from hub.services.container import Container
from web.deps import ContainerDep, HtmlErrorRoute, ReadAccess
from web.render import UI, render
from web.svg_lineage import lineage_svg
from web.svg_spectra import spectra_chart

router = APIRouter(route_class=HtmlErrorRoute, include_in_schema=False)

Facet = Annotated[str | None, Query(max_length=256, pattern=r"^[^\x00]*$")]
Page = Annotated[int, Query(ge=1, le=10**6)]
PerPage = Annotated[int, Query(ge=1, le=200)]
Name = Annotated[str, Path(max_length=128)]


def _filters(
    base_model: Facet = None,
    tag: Facet = None,
    rank: Facet = None,
    source: Facet = None,
    license: Facet = None,
) -> BrowseFilters:
    return BrowseFilters(base_model, tag, rank, source, license)


@router.get("/")
def root() -> Response:
    return RedirectResponse(f"{UI}/", status_code=307)


@router.get(f"{UI}/", dependencies=[ReadAccess], response_class=HTMLResponse)
def browse(
    request: Request,
    container: ContainerDep,
    base_model: Facet = None,
    tag: Facet = None,
    rank: Facet = None,
    source: Facet = None,
    license: Facet = None,
    page: Page = 1,
    per_page: PerPage = 20,
) -> Response:
    filters = _filters(base_model, tag, rank, source, license)
    result = container.browse.browse(filters, page=page, per_page=per_page)
    params: dict[str, Any] = {**filters.active(), "per_page": per_page if per_page != 20 else None}
    return render(
        request,
        "browse.html",
        result=result,
        filters=filters.active(),
        params=params,
        facet_labels=FACET_LABELS,
        q="",
        mode="hybrid",
    )


@router.get(f"{UI}/search", dependencies=[ReadAccess], response_class=HTMLResponse)
def search(
    request: Request,
    container: ContainerDep,
    q: Annotated[str, Query(max_length=2000)] = "",
    mode: Literal["hybrid", "text", "weights"] = "hybrid",
    k: Annotated[int, Query(ge=1, le=200)] = 20,
    base_model: Facet = None,
    tag: Facet = None,
    rank: Facet = None,
    source: Facet = None,
    license: Facet = None,
) -> Response:
    filters = _filters(base_model, tag, rank, source, license)
    if not q.strip():
        return RedirectResponse(f"{UI}/", status_code=303)
    hits, problem = [], None
    try:
        hits = container.browse.search_items(q, mode=mode, k=k, filters=filters)
    except HubError as exc:  # e.g. weight mode before an encoder exists: say so on the page
        if exc.kind != "bad_input":
            raise
        if exc.code != "index_empty":  # an empty catalog simply has no results
            problem = f"{exc.code}: {exc.message}"
    return render(
        request,
        "search.html",
        400 if problem else 200,
        hits=hits,
        problem=problem,
        q=q,
        mode=mode,
        filters=filters.active(),
    )


@router.get(f"{UI}/adapters/{{name}}", dependencies=[ReadAccess], response_class=HTMLResponse)
def adapter_latest(request: Request, name: Name, container: ContainerDep) -> Response:
    return _adapter_page(request, container, AdapterRef(validate_name(name)))


@router.get(
    f"{UI}/adapters/{{name}}/versions/{{version}}",
    dependencies=[ReadAccess],
    response_class=HTMLResponse,
)
def adapter_version(
    request: Request,
    name: Name,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    container: ContainerDep,
) -> Response:
    return _adapter_page(request, container, AdapterRef(validate_name(name), version))


def _adapter_page(request: Request, container: Container, ref: AdapterRef) -> Response:
    detail = container.registry.show(ref)
    pinned = AdapterRef(detail.name, detail.version)
    graph = container.browse.lineage(pinned)
    return render(
        request,
        "adapter.html",
        a=detail,
        versions=container.browse.versions(detail.name),
        graph=graph,
        lineage_svg=lineage_svg(graph),
        **_spectra_context(container, pinned, detail.modules),
        **_similar_context(container, pinned),
    )


def _spectra_context(container: Container, ref: AdapterRef, modules: list[Any]) -> dict[str, Any]:
    try:
        spectra = container.spectra.for_version(ref)
    except HubError as exc:  # e.g. a corrupted blob: the rest of the page still renders
        return {"spectra_rows": [], "charts": [], "spectra_error": f"{exc.code}: {exc.message}"}
    shapes = {m.name: m for m in modules}
    ordered = sorted(spectra.modules, key=lambda m: (m.layer is None, m.layer or 0, m.name))
    rows = [(m, shapes.get(m.name)) for m in ordered]
    charts = [
        (kind, spectra_chart(kind, mods, f"spectra-{i}"))
        for i, (kind, mods) in enumerate(spectra.by_kind().items())
    ]
    return {"spectra_rows": rows, "charts": charts, "spectra_error": None}


def _similar_context(container: Container, ref: AdapterRef) -> dict[str, Any]:
    try:
        hits, how = container.browse.similar(ref, k=8)
    except HubError as exc:
        return {"similar": [], "similar_how": None, "similar_error": exc.message}
    return {"similar": hits, "similar_how": how, "similar_error": None}
