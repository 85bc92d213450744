"""Response (and non-model request) schemas: the OpenAPI contract. Adapter and job fields come
from ``hub.core.models`` so the REST and CLI ``--json`` shapes cannot drift apart."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field

from hub.core.json_input import JsonBody
from hub.core.models import MAX_BASE_MODEL_ID, MAX_TAG, AdapterItem, JobRecord
from hub.services.card_rules import MAX_CARD_DESCRIPTION, MAX_LICENSE, MAX_TAGS
from hub.services.merge_jobs import NAME_PATTERN, NO_NUL, REF_PATTERN, MergeJobSpec
from hub.services.mixture_jobs import MixtureJobSpec
from hub.services.transfer_jobs import TransferJobSpec


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code (hub.core.errors).")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# Declared on every router: documents the error shape, and declaring 422 keeps FastAPI from
# advertising its own HTTPValidationError body, which this API never sends.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Bad input (the code names the defect)"),
    401: _error("Missing, unknown or revoked bearer token"),
    404: _error("Not found"),
    409: _error("Conflict"),
    422: _error("Request does not match the schema"),
    500: _error("Internal error"),
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {413: _error("Upload over the size limit")}


class AdapterList(BaseModel):
    data: list[AdapterItem]
    count: int = Field(description="Items on this page.")
    total: int = Field(description="Items matching the filters on all pages.")


class AdapterCreated(AdapterItem):
    created: bool = Field(description="False when these exact weights were already registered.")
    warnings: list[str] = Field(default_factory=list)


class AdapterAddPlan(BaseModel):
    """What ``POST /adapters`` would do with this upload (``?dry_run=true``): every check made,
    nothing written."""

    dry_run: bool = True
    name: str
    created: bool = Field(description="A new version would be registered.")
    new_adapter: bool = Field(description="No adapter of this name yet.")
    existing: str | None = Field(description="NAME@VERSION already holding these weights.")
    digest: str
    size_bytes: int
    base_model: str | None
    architecture: str | None
    target_modules: list[str]
    rank: int
    dtype: str | None
    mergeable: bool
    not_mergeable_reason: str | None
    warnings: list[str] = Field(default_factory=list)


class CardEdit(BaseModel):
    """The body of ``PATCH /adapters/{name}`` (JSON merge patch, RFC 7396): a field left out
    stays as it is, ``null`` clears it (as does ``""`` or ``[]``)."""

    model_config = {"extra": "forbid"}

    description: str | None = Field(
        default=None, max_length=MAX_CARD_DESCRIPTION, pattern=NO_NUL, description="What it does."
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=MAX_TAG)]] | None = Field(
        default=None, max_length=MAX_TAGS, description="The whole tag set (replaces it)."
    )
    license: str | None = Field(
        default=None, max_length=MAX_LICENSE, pattern=NO_NUL, description="License id."
    )

    def changes(self) -> dict[str, Any]:
        """Keyword arguments for ``RegistryService.edit_card``: only the fields sent."""
        cleared: dict[str, Any] = {"description": "", "tags": [], "license": ""}
        return {
            f: cleared[f] if getattr(self, f) is None else getattr(self, f)
            for f in self.model_fields_set
        }


class CardEdited(AdapterItem):
    changed: bool = Field(description="False when the card already said this (nothing written).")


class MethodParam(BaseModel):
    name: str
    type: str
    default: str
    description: str


class MethodInfo(BaseModel):
    name: str
    pretty_name: str
    reference: str
    description: str
    params: list[MethodParam]


class MethodList(BaseModel):
    data: list[MethodInfo]
    count: int


MergeRequest = MergeJobSpec


class MergePlanResponse(BaseModel):
    """What ``POST /merges`` would do (``?dry_run=true``): every check a merge makes from the
    catalog, and the result it would produce; nothing computed, queued or written."""

    dry_run: bool = True
    name: str
    new_adapter: bool = Field(description="No adapter of this name yet (else its next version).")
    inputs: list[str] = Field(description="NAME@VERSION of each input, pinned.")
    base_model: str | None
    seed: int
    device: str | None = Field(description="Null: the worker that runs the job decides.")
    method: str
    params: dict[str, Any] = Field(description="The method's params, defaults filled in.")
    weights: list[float]
    rank: int = Field(description="Largest output rank of a module.")
    module_ranks: dict[str, int] = Field(description="Output rank of every merged module.")
    modules_skipped: list[str] = Field(description="Adapted by an input, left out by `modules`.")
    modules_partial: dict[str, list[str]] = Field(
        description="`modules=union`: merged module -> the inputs that lack it."
    )
    output_parameters: int
    output_bytes: int = Field(description="fp32 factors of the result (before the header).")
    input_parameters: int = Field(description="The inputs' parameters in the merged modules.")
    artifact_parameters: int | None = Field(description="Revertible methods (rmm): the artifact.")
    dense: bool = Field(description="Materializes a d_out x d_in matrix per input and module.")


class RevertRequest(JsonBody):
    """The body of ``POST /adapters/{name}/revert``: which input of the RMM merge to rebuild."""

    model_config = {"extra": "forbid"}

    member: str = Field(
        max_length=140, pattern=REF_PATTERN, description="NAME or NAME@VERSION of a merge input."
    )
    name: str | None = Field(
        default=None,
        max_length=128,
        pattern=NAME_PATTERN,
        description="Name of the rebuilt adapter (default: MEMBER.reverted).",
    )
    version: int | None = Field(  # JsonBody: `true` or "1" is not version 1
        default=None, ge=1, le=2**31 - 1, description="Version of the merge (default: latest)."
    )


MixtureRequest = MixtureJobSpec
TransferRequest = TransferJobSpec


class JobAccepted(BaseModel):
    job_id: str
    state: str = "queued"


class JobList(BaseModel):
    data: list[JobRecord]
    count: int


class DatabaseHealth(BaseModel):
    ok: bool
    dialect: str = Field(description="`sqlite` or `postgresql`.")


class JobsHealth(BaseModel):
    ok: bool = Field(description="The backend runs jobs (started, and Ray reachable).")
    backend: str
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend figures: workers/active (inprocess); address, resources, "
        "active/submitted/finished/lost tasks (ray).",
    )


class Health(BaseModel):
    status: str = Field(default="ok", description="`ok`, or `degraded` when jobs cannot run.")
    version: str
    jobs_backend: str
    database: DatabaseHealth | None = None
    jobs: JobsHealth | None = None


# Catalog filters of GET /adapters and /search: the limits of what can be stored, so anything
# registered can be filtered for.
BaseModelFilter = Annotated[str | None, Query(max_length=MAX_BASE_MODEL_ID, pattern=NO_NUL)]
TagFilter = Annotated[str | None, Query(max_length=MAX_TAG, pattern=NO_NUL)]
SourceFilter = Annotated[str | None, Query(max_length=256, pattern=NO_NUL)]

UPLOAD_FIELDS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "description": "Adapter name (letters, digits, . _ -)."},
    "description": {"type": "string"},
    "tags": {"type": "string", "description": "Comma-separated tags (or repeat the field)."},
    "license": {"type": "string"},
    "base_model": {
        "type": "string",
        "maxLength": MAX_BASE_MODEL_ID,
        "description": "Overrides the config's base model.",
    },
    "sha256": {
        "type": "string",
        "pattern": "^[0-9a-fA-F]{64}$",
        "description": "sha256 of adapter_model.safetensors as sent: checked on arrival "
        "(mismatch: 400 digest_mismatch, nothing stored).",
    },
    "adapter_config.json": {"type": "string", "format": "binary"},
    "adapter_model.safetensors": {"type": "string", "format": "binary"},
}
# The upload form is parsed by the handler (after the token check, with the size limit applied
# while reading), so FastAPI cannot derive its schema: it is spelled out here.
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "adapter_config.json", "adapter_model.safetensors"],
                    "properties": UPLOAD_FIELDS,
                    "additionalProperties": False,
                }
            }
        },
    }
}
