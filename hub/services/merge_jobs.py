"""The ``merge`` job kind: a merge submitted over REST (or any job client) runs in a worker.

Validation at submit time is cheap and catches what a user can get wrong (unknown method, bad
params, missing adapters, weight count, name) so the request fails with a 4xx instead of a job
that fails later. Adapter references are pinned to versions then: the job merges what existed
when it was submitted, even if a newer version lands while it waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints

from hub.core.json_input import JsonBody
from hub.core.models import MAX_TAG
from hub.core.names import AdapterRef, validate_name
from hub.core.seeds import MAX_SEED
from hub.services.card_rules import MAX_CARD_DESCRIPTION, MAX_TAGS
from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.job_specs import JsonObject, parse_job_spec, published, with_pins
from hub.services.jobs import JobContext

if TYPE_CHECKING:
    from hub.services.container import Container
    from hub.services.merge import MergePlan


# JSON-schema spellings of hub.core.names rules (letters, digits, . _ -; no ".."), so the OpenAPI
# contract describes valid names and generated clients/fuzzers need not learn them from 400s.
NAME_PATTERN = r"^(?:\.?[A-Za-z0-9_-])+\.?$"
REF_PATTERN = r"^(?:\.?[A-Za-z0-9_-])+\.?(?:@[1-9][0-9]{0,8})?$"
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL

Ref = Annotated[str, StringConstraints(max_length=140, pattern=REF_PATTERN)]
# Tags a job may give its result: at most MAX_TAGS, each at most MAX_TAG characters.
Tag = Annotated[str, StringConstraints(max_length=MAX_TAG, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")]


class MergeJobSpec(JsonBody):
    """A merge request: the body of ``POST /merges`` and the spec stored on the job."""

    model_config = ConfigDict(extra="forbid")

    adapters: list[Ref] = Field(
        min_length=1, max_length=1000, description="NAME or NAME@VERSION of each input."
    )
    method: str = Field(default="svd", max_length=64, description="A method of GET /methods.")
    params: JsonObject = Field(default_factory=dict, description="Method parameters.")
    # strict: `true` or "0.5" is a mistake to name (422), not a weight to guess
    weights: list[float] | None = Field(
        default=None, description="One weight per adapter (default 1.0 each)."
    )
    name: str = Field(
        max_length=128, pattern=NAME_PATTERN, description="Name of the merged adapter."
    )
    description: str = Field(default="", max_length=MAX_CARD_DESCRIPTION, pattern=NO_NUL)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed (DARE's masks).")
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]{1,2})?)$",
        description="auto, cpu, cuda or cuda:N (CUDA is looked for by the worker that runs it).",
    )


def plan_merge(container: Container, spec: MergeJobSpec) -> MergePlan:
    """Every check of the merge that needs no weights (the codes the worker would raise), and
    what it would produce: a job's submit-time validation and ``POST /merges?dry_run=true``.
    The device is left to the worker that will run it."""
    validate_name(spec.name)  # the pattern above is a convenience; this is the rule
    refs, request = _service_args(spec)
    return container.merges.plan(refs, **{**request, "device": None})


def _service_args(spec: MergeJobSpec) -> tuple[list[AdapterRef], dict[str, Any]]:
    """The spec as ``MergeService.plan`` / ``merge`` arguments: refs, and the rest by name."""
    request = spec.model_dump(exclude={"adapters"})
    return [AdapterRef.parse(a) for a in spec.adapters], request


def validate_merge(container: Container, raw: dict[str, Any]) -> dict[str, Any]:
    spec = parse_job_spec(MergeJobSpec, raw, "merge")
    plan = plan_merge(container, spec)
    return with_pins({**spec.model_dump(mode="json"), "adapters": plan.labels}, plan.inputs)


def run_merge(container: Container, raw: dict[str, Any], ctx: JobContext) -> JobOutcome:
    spec = MergeJobSpec.model_validate({k: v for k, v in raw.items() if k in _FIELDS})
    ctx.progress(0.0, "loading inputs")

    def on_progress(done: int, total: int) -> None:
        # The engine's share of the work; loading and publishing take the rest.
        ctx.progress(0.05 + 0.9 * done / max(total, 1), f"merged {done}/{total} modules")

    refs, request = _service_args(spec)
    outcome = container.merges.merge(refs, **request, progress=on_progress)
    return published(container, outcome.added.item, "merged into {ref}", outcome.added.warnings)


_FIELDS = frozenset(MergeJobSpec.model_fields)

MERGE_JOB = register_job_kind(
    JobKind(
        "merge",
        run=run_merge,
        validate=validate_merge,
        description="Merge adapters.",
        wants_gpu=True,
    )
)
