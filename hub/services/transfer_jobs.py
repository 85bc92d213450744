"""The ``transfer`` job kind: Trans-LoRA run by a worker (``POST /transfers``).

Submit-time validation runs ``TransferService.plan`` (adapter, base models, task, seeds) and
pins the adapter to its version and the task to the reference it resolved to. Over REST the
task is a zoo task name only (or the one the adapter records): a path would let a client make
the server read its files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from generation.translora.params import TransferParams
from hub.core.names import AdapterRef, validate_name
from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.job_specs import parse_job_spec, published, with_pins
from hub.services.jobs import JobContext
from hub.services.merge_jobs import MAX_TAGS, NAME_PATTERN, NO_NUL, Ref, Tag
from hub.services.transfer import DEFAULT_GENERATOR

if TYPE_CHECKING:
    from hub.services.container import Container


class TransferJobSpec(TransferParams):
    """A transfer request: the body of ``POST /transfers`` and the spec stored on the job."""

    adapter: Ref = Field(description="NAME or NAME@VERSION of the source adapter.")
    to: str = Field(max_length=64, description="Target base model (`loradex models ls`).")
    name: str = Field(
        max_length=128, pattern=NAME_PATTERN, description="Name of the transferred adapter."
    )
    task: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Zoo task name; default: the task the adapter's metadata names.",
    )
    generator: str = Field(
        default=DEFAULT_GENERATOR, max_length=64, description="Base model writing inputs."
    )
    description: str | None = Field(default=None, max_length=10_000, pattern=NO_NUL)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    device: Literal["auto", "cpu", "cuda"] = "auto"


_JOB_FIELDS = frozenset(TransferJobSpec.model_fields) - frozenset(TransferParams.model_fields)


def parse_spec(raw: dict[str, Any]) -> tuple[TransferJobSpec, TransferParams]:
    spec = parse_job_spec(TransferJobSpec, raw, "transfer")
    params = TransferParams.model_validate(spec.model_dump(exclude=set(_JOB_FIELDS)))
    return spec, params


def validate_transfer(container: Container, raw: dict[str, Any]) -> dict[str, Any]:
    spec, params = parse_spec(raw)
    validate_name(spec.name)
    plan = container.transfers.plan(
        AdapterRef.parse(spec.adapter),
        to=spec.to,
        task_ref=spec.task,
        generator=spec.generator,
        params=params,
    )
    # The adapter is pinned; ``task`` stays as given (the service resolves the same one again
    # from the pinned version) and the resolved reference is recorded for people.
    pinned = {"adapter": plan.source_label, "task_resolved": plan.task_ref}
    return with_pins({**spec.model_dump(mode="json"), **pinned}, [plan.source])


def run_transfer(container: Container, raw: dict[str, Any], ctx: JobContext) -> JobOutcome:
    spec, params = parse_spec({k: v for k, v in raw.items() if k in TransferJobSpec.model_fields})
    added = container.transfers.transfer(
        AdapterRef.parse(spec.adapter),
        to=spec.to,
        name=spec.name,
        task_ref=spec.task,
        generator=spec.generator,
        params=params,
        description=spec.description,
        tags=spec.tags,
        device=spec.device,
        progress=ctx.progress,
    )
    kept = added.item.metadata.get("synthetic_kept")
    return published(container, added.item, f"transferred into {{ref}} ({kept} inputs)")


TRANSFER_JOB = register_job_kind(
    JobKind(
        "transfer",
        run=run_transfer,
        validate=validate_transfer,
        description="Move an adapter to another base model (Trans-LoRA).",
    )
)
