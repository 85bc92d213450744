"""``/search`` and ``/adapters/{name}/similar``: find adapters for a task, or near one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from api.deps import ContainerDep, ReadAccess
from api.schemas import ERROR_RESPONSES, BaseModelFilter, SourceFilter, TagFilter
from hub.core.models import AdapterItem
from hub.core.names import AdapterRef
from hub.services.merge_jobs import REF_PATTERN

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES)


class SearchHit(AdapterItem):
    score: float
    text_score: float | None
    weight_score: float | None
    why: str


class SearchResults(BaseModel):
    data: list[SearchHit]
    count: int


def _results(results: list) -> Response:
    """The ``SearchResults`` body, serialized directly: every field comes from a validated
    catalog item (dumped once per catalog generation) plus plain floats and strings, so a
    second validation by FastAPI per request would only cost time on the hottest route."""
    body = f'{{"data":[{",".join(r.to_json() for r in results)}],"count":{len(results)}}}'
    return Response(body, media_type="application/json")


@router.get("/search", dependencies=[ReadAccess], response_model=SearchResults)
async def search(
    container: ContainerDep,
    q: Annotated[str, Query(max_length=2000, description="What the adapter should do.")],
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
    mode: Literal["text", "weights", "hybrid"] = "hybrid",
    base_model: BaseModelFilter = None,
    tag: TagFilter = None,
    source: SourceFilter = None,
) -> Response:
    args = {"k": k, "mode": mode, "base_model": base_model, "tag": tag, "source": source}
    # Answered from memory on the event loop when possible (a repeated query: no I/O, no
    # model call); otherwise in the thread pool, where catalog reads and MiniLM may block.
    results = container.search.search_cached(q, **args)
    if results is None:
        results = await run_in_threadpool(container.search.search, q, **args)
    return _results(results)


@router.get("/adapters/{name}/similar", dependencies=[ReadAccess], response_model=SearchResults)
async def similar(
    container: ContainerDep,
    name: Annotated[str, Path(max_length=140, pattern=REF_PATTERN, description="NAME[@VERSION]")],
    k: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> Response:
    results = await run_in_threadpool(container.search.similar, AdapterRef.parse(name), k=k)
    return _results(results)
