"""Pydantic metadata models shared by services, storage and the delivery layers.

Field names here are the public ``--json`` / REST contract (CLI.md); change them only additively.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from hub.core.errors import BadInputError
from hub.core.names import validate_name

Source = str  # upload | hf://repo@sha | merge | mixture | generated | transferred | zoo | trained
# A base model id is a Hub repo id or a local path; longer ones are refused at registration,
# so every stored id fits the catalog filters (GET /adapters?base_model=, /search).
MAX_BASE_MODEL_ID = 256
# Longest tag, everywhere a tag is taken (catalog, job bodies, filters, Hub cards).
MAX_TAG = 64
# Card limits, the same for every way an adapter gets a card (add, merge, train, mix, transfer,
# generate, edit, REST): a CLI path that skipped them stored what `edit` and REST refuse.
MAX_CARD_DESCRIPTION = 10_000  # characters
MAX_LICENSE = 128  # the catalog column's width
MAX_TAGS = 64


def check_base_model_id(model_id: str) -> str:
    if len(model_id) > MAX_BASE_MODEL_ID or "\x00" in model_id or not model_id.strip():
        shown = model_id[:40] + ("..." if len(model_id) > 40 else "")
        raise BadInputError(
            f"base model id {shown!r} must be 1-{MAX_BASE_MODEL_ID} characters without NUL "
            f"(got {len(model_id)})",
            code="base_model_invalid",
        )
    return model_id


class AdapterMeta(BaseModel):
    """What a user says about an adapter when registering it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    license: str | None = None
    owner: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        cleaned = clean_tags(v)  # repeats count once
        if len(cleaned) > MAX_TAGS:
            raise BadInputError(
                f"at most {MAX_TAGS} tags, got {len(cleaned)} (counting those the command adds "
                "itself, such as its source or the task family)",
                code="invalid_tags",
            )
        return cleaned

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        return check_card_text("description", v, MAX_CARD_DESCRIPTION)

    @field_validator("license")
    @classmethod
    def _license(cls, v: str | None) -> str | None:
        return None if v is None else check_card_text("license", v, MAX_LICENSE)


def check_card_text(field: str, value: str, limit: int) -> str:
    """``value`` if it fits a card field: at most ``limit`` characters, no NUL (PostgreSQL
    text cannot hold one)."""
    if len(value) > limit or "\x00" in value:
        raise BadInputError(
            f"{field} must be at most {limit} characters without NUL, got {len(value)}",
            code=f"invalid_{field}",
        )
    return value


def clean_tags(tags: list[str]) -> list[str]:
    """Tags as the catalog stores them: stripped, without repeats, sorted. A ValueError names
    the first bad one."""
    out = []
    for t in tags:
        t = t.strip()
        if not t or len(t) > MAX_TAG or "\x00" in t:
            raise ValueError(f"invalid tag {t!r}: 1-{MAX_TAG} characters, no NUL")
        out.append(t)
    return sorted(set(out))


class ParentRef(BaseModel):
    name: str
    version: int
    relation: str
    weight: float | None = None
    # The parent version was deleted. Its name and version are kept for the record, but they may
    # since name another adapter (a deleted name can be registered again, from version 1), so
    # nothing may look the parent up by name when this is set.
    deleted: bool = False


class Lineage(BaseModel):
    parents: list[ParentRef] = Field(default_factory=list)
    recipe: dict[str, Any] | None = None


class EvaluationRecord(BaseModel):
    task: str
    accuracy: float
    n: int
    created_at: datetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class ModuleInfo(BaseModel):
    name: str
    rank: int
    in_features: int
    out_features: int


class AdapterItem(BaseModel):
    """One adapter version as listed (``ls``/``search`` items). Contract fields first."""

    name: str
    version: int
    base_model: str | None
    description: str
    tags: list[str]
    source: Source
    license: str | None = None
    digest: str
    size_bytes: int
    base_model_revision: str | None = None
    base_model_fingerprint: str | None = None
    target_modules: list[str]
    rank: int
    mergeable: bool
    not_mergeable_reason: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class AdapterDetail(AdapterItem):
    """``show`` output: the item plus modules, lineage and evaluations."""

    modules: list[ModuleInfo]
    lineage: Lineage
    evaluations: list[EvaluationRecord]
    config: dict[str, Any]
    artifact_digest: str | None = None


class BaseModelInfo(BaseModel):
    """A registered base model: module shapes let ``add`` check adapters against it."""

    model_id: str
    revision: str | None = None
    fingerprint: str | None = None
    architecture: str | None = None
    # "model.layers.0.self_attn.q_proj" -> [d_in, d_out]
    module_shapes: dict[str, tuple[int, int]]


JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_JOB_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
OPEN_JOB_STATES: frozenset[str] = frozenset(get_args(JobState)) - TERMINAL_JOB_STATES


class JobRecord(BaseModel):
    id: str
    kind: str
    state: JobState
    progress: float = 0.0
    message: str = ""
    spec: dict[str, Any] = Field(default_factory=dict)
    result: str | None = None
    error: str | None = None  # "CODE: message", written in one place (hub.services.jobs)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def error_code(self) -> str | None:
        """The stable code of a failed job's error (``target_rank_too_large``, ``internal``),
        for clients that branch on it without parsing ``error``."""
        return self.error.split(":", 1)[0].strip() if self.error else None
