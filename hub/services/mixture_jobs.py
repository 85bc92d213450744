"""The ``mixture`` job kind: ``loradex mix`` and ``POST /mixtures`` train a gate in a worker.

Submit-time validation runs ``MixtureService.plan`` (no model is loaded): too few or repeated
experts, an expert that is a mixture, experts on different base models, a missing or invalid
task, and bad gate options fail the request. Experts are pinned to versions then. Progress is
reported through training; a cancel stops the job at its next report, and a job stopped before
its final catalog transaction registers nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, FiniteFloat

from hub.core.errors import BadInputError
from hub.core.json_input import JsonBody
from hub.core.names import AdapterRef, validate_name
from hub.core.seeds import MAX_SEED
from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.job_specs import parse_job_spec, published, with_pins
from hub.services.jobs import JobContext
from hub.services.merge_jobs import MAX_TAGS, NAME_PATTERN, NO_NUL, Ref, Tag
from hub.services.mixture import GateOptions

if TYPE_CHECKING:
    from hub.services.container import Container


class MixtureJobSpec(JsonBody):
    """A mixture request: the body of ``POST /mixtures`` and the spec stored on the job."""

    model_config = ConfigDict(extra="forbid")

    experts: list[Ref] = Field(
        min_length=1, max_length=64, description="NAME or NAME@VERSION of each expert (>= 2)."
    )
    name: str = Field(max_length=128, pattern=NAME_PATTERN, description="Name of the mixture.")
    tasks: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Training tasks: zoo names or task files on the server; EXPERT=TASK sets "
        "one expert's, a bare TASK goes to the next expert without a recorded task.",
    )
    routing: Literal["prompt", "token"] = Field(
        "prompt", description="One gate prediction per prompt, or per token (X-LoRA)."
    )
    objective: Literal["route", "lm"] = Field(
        "route", description="Train the gate to pick each example's expert, or on the LM loss."
    )
    depth: int = Field(1, ge=1, le=8, description="Gate depth (xlora_depth).")
    size: int = Field(256, ge=1, le=65536, description="Gate width at depth >= 2.")
    layerwise: bool = Field(False, description="One prediction per adapted module.")
    temperature: FiniteFloat = Field(1.0, gt=0.0, le=1000.0, description="Softmax temperature.")
    top_k: int | None = Field(None, ge=1, le=64, description="Keep the k largest scalings.")
    dropout: FiniteFloat = Field(0.0, ge=0.0, lt=1.0, description="Gate dropout at depth >= 2.")
    steps: int = Field(200, ge=1, le=100_000, description="Optimizer steps.")
    batch: int = Field(8, ge=1, le=1024, description="Examples per step (lm objective).")
    examples: int = Field(32, ge=1, le=100_000, description="Examples per expert (route).")
    lr: FiniteFloat = Field(2e-3, gt=0.0, le=1.0, description="AdamW learning rate.")
    warmup: int = Field(10, ge=0, le=100_000, description="Linear warm-up steps.")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    description: str = Field(default="", max_length=10_000, pattern=NO_NUL)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def options(self) -> GateOptions:
        return GateOptions(
            routing=self.routing,
            depth=self.depth,
            size=self.size,
            layerwise=self.layerwise,
            temperature=self.temperature,
            top_k=self.top_k,
            dropout=self.dropout,
            objective=self.objective,
            steps=self.steps,
            batch=self.batch,
            lr=self.lr,
            warmup=self.warmup,
            examples=self.examples,
            seed=self.seed,
        )


def parse_spec(raw: dict[str, Any]) -> MixtureJobSpec:
    return parse_job_spec(MixtureJobSpec, raw, "mixture")


def validate_mixture(container: Container, raw: dict[str, Any]) -> dict[str, Any]:
    spec = parse_spec(raw)
    validate_name(spec.name)
    if spec.top_k is not None and spec.top_k > len(spec.experts):
        raise BadInputError(
            f"top_k={spec.top_k} exceeds the {len(spec.experts)} experts", code="invalid_spec"
        )
    plan = container.mixtures.plan([AdapterRef.parse(e) for e in spec.experts], spec.tasks)
    tasks = [f"{label}={task}" for label, task in zip(plan.labels, plan.tasks, strict=True)]
    stored = {**spec.model_dump(mode="json"), "experts": plan.labels, "tasks": tasks}
    return with_pins(stored, plan.experts)


def run_mixture(container: Container, raw: dict[str, Any], ctx: JobContext) -> JobOutcome:
    spec = parse_spec({k: v for k, v in raw.items() if k in _FIELDS})
    outcome = container.mixtures.mix(
        [AdapterRef.parse(e) for e in spec.experts],
        name=spec.name,
        options=spec.options(),
        tasks=spec.tasks,
        description=spec.description,
        tags=spec.tags,
        device=spec.device,
        progress=ctx.progress,
    )
    return published(container, outcome.added.item, "mixed into {ref}")


_FIELDS = frozenset(MixtureJobSpec.model_fields)

MIXTURE_JOB = register_job_kind(
    JobKind(
        "mixture",
        run=run_mixture,
        validate=validate_mixture,
        description="Train an X-LoRA gate over catalog experts.",
    )
)
