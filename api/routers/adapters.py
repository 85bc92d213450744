"""``/adapters``: list with filters and paging, show, upload (multipart PEFT files), delete,
download of the two PEFT files."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import ContainerDep, ReadAccess, RegistryDep, SettingsDep, WriteAuth
from api.schemas import (
    ERROR_RESPONSES,
    UPLOAD_BODY,
    UPLOAD_ERRORS,
    AdapterAddPlan,
    AdapterCreated,
    AdapterList,
    BaseModelFilter,
    CardEdit,
    CardEdited,
    RevertRequest,
    SourceFilter,
    TagFilter,
)
from api.uploads import read_upload
from hub.core.models import AdapterDetail
from hub.core.names import AdapterRef, validate_name
from hub.services.merge_jobs import NAME_PATTERN

router = APIRouter(prefix="/adapters", tags=["adapters"], responses=ERROR_RESPONSES)

Name = Annotated[str, Path(max_length=128, pattern=NAME_PATTERN, description="Adapter name.")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


class PeftFile(StrEnum):
    config = "adapter_config.json"
    weights = "adapter_model.safetensors"


def _ref(name: str, version: int | None = None) -> AdapterRef:
    return AdapterRef(validate_name(name), version)


@router.get("", dependencies=[ReadAccess])
def list_adapters(
    registry: RegistryDep,
    base_model: BaseModelFilter = None,
    tag: TagFilter = None,
    source: SourceFilter = None,
    all_versions: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> AdapterList:
    items, total = registry.ls(
        base_model=base_model,
        tag=tag,
        source=source,
        all_versions=all_versions,
        limit=limit,
        offset=offset,
    )
    return AdapterList(data=items, count=len(items), total=total)


@router.get("/{name}", dependencies=[ReadAccess])
def get_adapter(name: Name, registry: RegistryDep) -> AdapterDetail:
    return registry.show(_ref(name))


@router.get("/{name}/versions/{version}", dependencies=[ReadAccess])
def get_version(name: Name, version: Version, registry: RegistryDep) -> AdapterDetail:
    return registry.show(_ref(name, version))


@router.post(
    "",
    status_code=201,
    response_model=AdapterCreated,
    openapi_extra=UPLOAD_BODY,
    responses={
        **UPLOAD_ERRORS,
        200: {
            "model": AdapterCreated | AdapterAddPlan,
            "description": "Already there (`created: false`), or with `?dry_run=true` what an "
            "upload would do",
        },
    },
)
async def upload_adapter(
    request: Request,
    response: Response,
    _: WriteAuth,
    registry: RegistryDep,
    settings: SettingsDep,
    dry_run: Annotated[
        bool, Query(description="Only check the upload (200, what would happen); write nothing.")
    ] = False,
) -> AdapterCreated | JSONResponse:
    """Register a PEFT LoRA adapter (idempotent: the same weights return the same version)."""
    up = await read_upload(request, settings.upload_max_bytes)
    if dry_run:
        plan = await run_in_threadpool(
            registry.plan_add_bytes,
            up.config_bytes,
            up.weights_bytes,
            up.meta,
            base_model=up.base_model,
        )
        # a plain response: the route's model (AdapterCreated) describes its 201 alone
        return JSONResponse(AdapterAddPlan(**plan.to_dict()).model_dump(mode="json"))
    added = await run_in_threadpool(
        registry.add_bytes, up.config_bytes, up.weights_bytes, up.meta, base_model=up.base_model
    )
    if not added.created:
        response.status_code = 200
    doc = added.item.model_dump()
    return AdapterCreated(**doc, created=added.created, warnings=added.warnings)


@router.post(
    "/{name}/revert",
    status_code=201,
    responses={200: {"model": AdapterCreated, "description": "Already there"}},
)
def revert_member(
    name: Name, body: RevertRequest, response: Response, _: WriteAuth, container: ContainerDep
) -> AdapterCreated:
    """Rebuild one input of a reversible (RMM) merge from its stored basis and register it,
    with a ``revert`` lineage edge to the merge (``loradex revert``). Fast: no job. Idempotent
    like an upload: the same result again is 200 with ``created: false``."""
    added = container.merges.revert(_ref(name, body.version), body.member, name=body.name)
    if not added.created:
        response.status_code = 200
    return AdapterCreated(**added.item.model_dump(), created=added.created, warnings=added.warnings)


@router.patch("/{name}")
def edit_card(name: Name, body: CardEdit, _: WriteAuth, registry: RegistryDep) -> CardEdited:
    """Change the adapter's card (description, tags, license; shared by all its versions) and
    return its latest version (``loradex edit``). Search re-embeds the edited card at once; the
    weights and version numbers do not change. A body that changes nothing, ``{}`` included
    (an empty merge patch), writes nothing: ``changed: false``."""
    changes = body.changes()
    if not changes:
        return CardEdited(
            **registry.catalog.get_item(validate_name(name)).model_dump(), changed=False
        )
    item, changed = registry.edit_card(validate_name(name), **changes)
    return CardEdited(**item.model_dump(), changed=changed)


@router.delete("/{name}", status_code=204)
def delete_adapter(name: Name, _: WriteAuth, registry: RegistryDep) -> Response:
    registry.rm(_ref(name))
    return Response(status_code=204)


@router.delete("/{name}/versions/{version}", status_code=204)
def delete_version(name: Name, version: Version, _: WriteAuth, registry: RegistryDep) -> Response:
    registry.rm(_ref(name, version))
    return Response(status_code=204)


FILE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/octet-stream": {}, "application/json": {}}}
}


def _file_response(registry: RegistryDep, ref: AdapterRef, filename: PeftFile) -> Response:
    data = registry.file_bytes(ref, filename.value)
    media = "application/json" if filename is PeftFile.config else "application/octet-stream"
    disposition = f'attachment; filename="{filename.value}"'
    return Response(data, media_type=media, headers={"Content-Disposition": disposition})


@router.get(
    "/{name}/files/{filename}",
    dependencies=[ReadAccess],
    response_class=Response,
    responses=FILE_RESPONSES,
)
def download_latest(name: Name, filename: PeftFile, registry: RegistryDep) -> Response:
    """A PEFT file of the latest version (put both in one directory for PEFT to load)."""
    return _file_response(registry, _ref(name), filename)


@router.get(
    "/{name}/versions/{version}/files/{filename}",
    dependencies=[ReadAccess],
    response_class=Response,
    responses=FILE_RESPONSES,
)
def download_version(
    name: Name, version: Version, filename: PeftFile, registry: RegistryDep
) -> Response:
    return _file_response(registry, _ref(name, version), filename)
