"""The ``merge`` job kind: a merge submitted over REST (or any job client) runs in a worker.

Validation at submit time is cheap and catches what a user can get wrong (unknown method, bad
params, missing adapters, weight count, name) so the request fails with a 4xx instead of a job
that fails later. Adapter references are pinned to versions then: the job merges what existed
when it was submitted, even if a newer version lands while it waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from hub.core.errors import BadInputError, NotMergeableError
from hub.core.models import MAX_TAG
from hub.core.names import AdapterRef, validate_name
from hub.services.card_rules import MAX_CARD_DESCRIPTION, MAX_TAGS
from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.job_specs import JsonObject, parse_job_spec, published, with_pins
from hub.services.jobs import JobContext
from hub.services.merge import MAX_SEED, check_same_base

if TYPE_CHECKING:
    from hub.services.container import Container


# JSON-schema spellings of hub.core.names rules (letters, digits, . _ -; no ".."), so the OpenAPI
# contract describes valid names and generated clients/fuzzers need not learn them from 400s.
NAME_PATTERN = r"^(?:\.?[A-Za-z0-9_-])+\.?$"
REF_PATTERN = r"^(?:\.?[A-Za-z0-9_-])+\.?(?:@[1-9][0-9]{0,8})?$"
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL

Ref = Annotated[str, StringConstraints(max_length=140, pattern=REF_PATTERN)]
# Tags a job may give its result: at most MAX_TAGS, each at most MAX_TAG characters.
Tag = Annotated[str, StringConstraints(max_length=MAX_TAG, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")]


class MergeJobSpec(BaseModel):
    """A merge request: the body of ``POST /merges`` and the spec stored on the job."""

    model_config = ConfigDict(extra="forbid")

    adapters: list[Ref] = Field(
        min_length=1, max_length=1000, description="NAME or NAME@VERSION of each input."
    )
    method: str = Field(default="svd", max_length=64, description="A method of GET /methods.")
    params: JsonObject = Field(default_factory=dict, description="Method parameters.")
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


def validate_merge(container: Container, raw: dict[str, Any]) -> dict[str, Any]:
    import merging  # torch: paid only when a merge is actually requested
    from merging.validation import Shapes

    spec = parse_job_spec(MergeJobSpec, raw, "merge")
    validate_name(spec.name)  # the pattern above is a convenience; this is the rule
    refs = [AdapterRef.parse(a) for a in spec.adapters]
    method = merging.get_method(spec.method)
    method.parse_params(spec.params)
    if len(refs) < 2:
        raise BadInputError(
            f"a merge needs at least 2 adapters, got {len(refs)}", code="merge_too_few_adapters"
        )
    if spec.weights is not None:
        merging.check_weights(
            spec.weights,
            len(refs),
            allow_negative=method.allow_negative_weights,
            method=method.name,
        )
    items = [container.registry.show(ref) for ref in refs]
    for item in items:
        if not item.mergeable:
            raise NotMergeableError(
                f"{item.name}@{item.version} cannot be merged: {item.not_mergeable_reason}"
            )
    check_same_base(items)
    pinned = [f"{item.name}@{item.version}" for item in items]
    # module sets, shapes and rank limits from the catalog: the codes the worker would raise
    shapes = [Shapes({m.name: m for m in item.modules}) for item in items]
    merging.precheck(shapes, spec.method, spec.params, pinned)
    return with_pins({**spec.model_dump(mode="json"), "adapters": pinned}, items)


def run_merge(container: Container, raw: dict[str, Any], ctx: JobContext) -> JobOutcome:
    spec = MergeJobSpec.model_validate({k: v for k, v in raw.items() if k in _FIELDS})
    ctx.progress(0.0, "loading inputs")

    def on_progress(done: int, total: int) -> None:
        # The engine's share of the work; loading and publishing take the rest.
        ctx.progress(0.05 + 0.9 * done / max(total, 1), f"merged {done}/{total} modules")

    outcome = container.merges.merge(
        [AdapterRef.parse(a) for a in spec.adapters],
        method=spec.method,
        name=spec.name,
        weights=spec.weights,
        params=spec.params,
        description=spec.description,
        tags=spec.tags,
        device=spec.device,
        seed=spec.seed,
        progress=on_progress,
    )
    return published(container, outcome.added.item, "merged into {ref}")


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
