"""What a merge would produce, from shapes alone: the engine's dry run.

``plan`` runs every check ``merge`` makes before tensor work (method, params, weights, module
policy, shapes, rank limits, the method's own precheck) on ``AdapterShapes`` (catalog rows, no
weights) and predicts the result: the modules merged and skipped, each module's output rank
(``MethodSpec.output_rank``), the parameter counts of the result, of the inputs and of a
revertible artifact (``MethodSpec.artifact_size``). A test holds every registered method's
prediction to a real merge of the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.core.errors import BadInputError
from merging.batch import group_modules
from merging.registry import MergeParams, MethodSpec, get_method
from merging.validation import AdapterShapes, align_modules, check_count, check_weights


@dataclass(frozen=True)
class MergeLayout:
    method: str
    params: dict[str, Any]  # parsed, defaults filled in: what the recipe will record
    weights: list[float]
    module_ranks: dict[str, int]  # merged module -> output rank
    modules_skipped: list[str]  # adapted by some input, left out by the module policy
    modules_partial: dict[str, list[str]]  # union policy: merged module -> inputs lacking it
    output_parameters: int
    input_parameters: int  # of the inputs, over the merged modules
    artifact_parameters: int | None  # revertible methods: what the artifact stores
    dense: bool  # materializes a d_out x d_in matrix per input and module (PEFT's dense path)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan(
    shapes: Sequence[AdapterShapes],
    method: str,
    params: dict[str, Any] | None = None,
    weights: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
) -> MergeLayout:
    spec = get_method(method)
    p = spec.parse_params(params)
    names = list(labels) if labels is not None else [f"#{i}" for i in range(len(shapes))]
    check_count(len(shapes))
    w = [float(x) for x in weights] if weights is not None else [1.0] * len(shapes)
    modules = check_request(spec, p, shapes, w, names)
    module_ranks: dict[str, int] = {}
    out_params = in_params = 0
    artifact = 0 if spec.artifact_size is not None else None
    for (d_out, d_in, _, ranks), group in group_modules(shapes, modules).items():
        rank = spec.output_rank(p, ranks)
        for name in group:
            module_ranks[name] = rank
        out_params += len(group) * rank * (d_out + d_in)
        in_params += len(group) * sum(ranks) * (d_out + d_in)
        if spec.artifact_size is not None and artifact is not None:
            artifact += len(group) * spec.artifact_size(p, d_out, d_in, ranks)
    union = sorted(set().union(*(s.modules for s in shapes)))
    partial = {
        m: [lab for lab, s in zip(names, shapes, strict=True) if m not in s.modules]
        for m in modules
    }
    return MergeLayout(
        method=spec.name,
        params=p.model_dump(mode="json"),
        weights=w,
        module_ranks=dict(sorted(module_ranks.items())),
        modules_skipped=[m for m in union if m not in module_ranks],
        modules_partial={m: labs for m, labs in partial.items() if labs},
        output_parameters=out_params,
        input_parameters=in_params,
        artifact_parameters=artifact,
        dense=spec.dense,
    )


def check_request(
    spec: MethodSpec,
    p: MergeParams,
    shapes: Sequence[AdapterShapes],
    weights: Sequence[float],
    labels: Sequence[str],
) -> list[str]:
    """The rules a request must pass on shapes alone (weights, module policy and shapes, rank
    limits, the method's own precheck), in the order ``merge``, ``merge_staged`` and ``plan``
    all check them. Returns the modules to merge."""
    check_weights(
        weights, len(shapes), allow_negative=spec.allow_negative_weights, method=spec.name
    )
    modules = align_modules(shapes, labels, p.modules)
    check_rank_rules(spec, p, shapes, modules)
    return modules


def check_rank_rules(
    spec: MethodSpec, p: MergeParams, adapters: Sequence[AdapterShapes], modules: list[str]
) -> None:
    """Rank rules that depend on the inputs, checked before any compute."""
    for (d_out, d_in, _, ranks), group in group_modules(adapters, modules).items():
        if spec.equal_ranks and len(set(ranks)) > 1:
            raise BadInputError(
                f"method {spec.name!r} needs equal ranks; module {group[0]} has ranks "
                f"{list(ranks)} (use cat, svd or lego)",
                code="rank_mismatch",
                module=group[0],
            )
        k = getattr(p, "rank", None)
        limit = {"total": sum(ranks), "dims": min(d_out, d_in)}.get(spec.rank_limit or "")
        if k is not None and limit is not None and k > limit:
            raise BadInputError(
                f"target rank {k} exceeds what module {group[0]} can hold ({limit}: "
                f"{'sum of input ranks' if spec.rank_limit == 'total' else 'min(d_out, d_in)'})",
                code="target_rank_too_large",
                module=group[0],
            )
        if spec.precheck is not None:
            spec.precheck(p, ranks)
