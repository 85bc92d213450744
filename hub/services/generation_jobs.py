"""The ``generation`` job kind: SG-LoRA generation submitted over REST (or any job client).

Submit-time validation catches what a user can get wrong (empty or oversized description, a
base model without experts, no trained generator, k larger than the generator's expert count,
rank/samples/seed ranges, the name) so the request fails with a 4xx instead of a job that fails
later. The generator version is pinned at submit time: the job generates with the artifact that
was current when it was accepted, or fails if a retrain replaced it meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, FiniteFloat

from hub.core.errors import BadInputError, ConflictError
from hub.core.json_input import JsonBody
from hub.core.names import validate_name
from hub.core.seeds import MAX_SEED
from hub.services.generation import (
    MAX_DESCRIPTION,
    MAX_RANK,
    MAX_SAMPLES,
    check_description,
    check_generation_params,
)
from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.job_specs import parse_job_spec, published
from hub.services.jobs import JobContext
from hub.services.merge_jobs import MAX_TAGS, NAME_PATTERN, NO_NUL, Tag

if TYPE_CHECKING:
    from hub.services.container import Container

NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"  # some visible character, no NUL


class GenerationRequest(JsonBody):
    """A generation request: the body of ``POST /generations``."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        min_length=1,
        max_length=MAX_DESCRIPTION,
        pattern=NOT_BLANK,
        description="The unseen task, in plain words.",
    )
    name: str = Field(
        max_length=128, pattern=NAME_PATTERN, description="Name of the generated adapter."
    )
    base: str | None = Field(
        default=None,
        max_length=256,
        pattern=NO_NUL,
        description="Base model (hf id or loadable name); default: the catalog's only one.",
    )
    k: int | None = Field(
        default=None, ge=1, le=10_000, description="Experts aggregated (default: the generator's)."
    )
    tau: FiniteFloat | None = Field(
        default=None, gt=0, le=100, description="Softmax temperature over cosine similarities."
    )
    samples: int = Field(
        default=8, ge=0, le=MAX_SAMPLES, description="Latent samples averaged (0: prior mean)."
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    rank: int = Field(default=16, ge=1, le=MAX_RANK, description="Rank of the generated LoRA.")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class GenerationJobSpec(GenerationRequest):
    """What the job stores: the request plus the generator version pinned at submit time."""

    generator_version: str | None = None


def validate_generation(container: Container, raw: dict[str, Any]) -> dict[str, Any]:
    spec = parse_job_spec(GenerationRequest, raw, "generation")
    check_description(spec.description)
    validate_name(spec.name)
    check_generation_params(rank=spec.rank, samples=spec.samples, seed=spec.seed)
    service = container.generators
    base_id, _ = service.experts(spec.base)
    version, generator = service.load(base_id)
    k = min(generator.settings.k, generator.size) if spec.k is None else spec.k
    if not 1 <= k <= generator.size:
        raise BadInputError(
            f"k = {k} but the generator knows {generator.size} experts (k must be "
            f"1..{generator.size})",
            code="k_out_of_range",
        )
    return {**spec.model_dump(mode="json"), "base": base_id, "generator_version": version}


def run_generation(container: Container, raw: dict[str, Any], ctx: JobContext) -> JobOutcome:
    spec = GenerationJobSpec.model_validate({k: v for k, v in raw.items() if k in _FIELDS})
    ctx.progress(0.0, "loading the generator")
    service = container.generators
    current = service.store.current(spec.base or "")
    if spec.generator_version and (current or {}).get("version") != spec.generator_version:
        raise ConflictError(
            "the generator was retrained after this job was submitted; submit it again",
            code="generator_changed",
        )
    outcome = service.generate(
        spec.description,
        name=spec.name,
        base=spec.base,
        k=spec.k,
        tau=spec.tau,
        samples=spec.samples,
        seed=spec.seed,
        rank=spec.rank,
        tags=spec.tags,
        progress=lambda fraction, message: ctx.progress(fraction, message),
    )
    drew = ", ".join(f"{d.name}@{d.version} ({d.weight:.2f})" for d in outcome.drew_on)
    return published(container, outcome.added.item, "generated {ref} from " + drew)


_FIELDS = frozenset(GenerationJobSpec.model_fields)

GENERATION_JOB = register_job_kind(
    JobKind(
        "generation",
        run=run_generation,
        validate=validate_generation,
        description="Generate an adapter for an unseen task from its description (SG-LoRA).",
    )
)
