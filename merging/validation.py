"""Input checks that run before any tensor work, so a bad merge fails fast and leaves nothing.

Every refusal is a typed ``HubError`` with a specific ``code``; ``MERGE_CODES`` enumerates them
(for docs and tests, like ``ADAPTER_CODES`` in ``hub.core.errors``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from hub.core.errors import (
    BadInputError,
    IncompatibleBaseModelError,
    NotMergeableError,
)
from hub.core.lora import LoraAdapter

ModulePolicy = Literal["strict", "intersection", "union"]


class ModuleShape(Protocol):
    """What the shape and rank rules read of a module: a ``LoraModule``, or a catalog
    ``ModuleInfo`` when a request is checked before any weights are loaded."""

    @property
    def rank(self) -> int: ...

    @property
    def in_features(self) -> int: ...

    @property
    def out_features(self) -> int: ...


class AdapterShapes(Protocol):
    @property
    def modules(self) -> Mapping[str, ModuleShape]: ...


@dataclass(frozen=True)
class Shapes:
    """An ``AdapterShapes`` without weights: catalog ``ModuleInfo`` rows (submit-time checks)
    or shapes kept beside device-resident factors."""

    modules: Mapping[str, ModuleShape]


MERGE_CODES: dict[str, str] = {
    "merge_too_few_adapters": "a merge needs at least two adapters",
    "not_mergeable": "an input is DoRA / has biases / modules_to_save (see its reason)",
    "base_model_mismatch": "inputs belong to different base models (id or fingerprint)",
    "target_modules_disjoint": "the inputs share no adapted module",
    "module_set_mismatch": "inputs adapt different modules and the policy is 'strict'",
    "module_shape_mismatch": "a module has different (d_out, d_in) across inputs",
    "weights_count_mismatch": "number of weights differs from the number of adapters",
    "weights_not_finite": "a weight is NaN or infinite",
    "weights_negative": "a negative weight for a method that forbids it",
    "weights_too_large": "a weight's magnitude exceeds 1e6 (no useful merge; fp32 overflows)",
    "rank_mismatch": "the method needs equal ranks per module (PEFT factor-wise methods)",
    "target_rank_too_large": "the target rank exceeds what the inputs can provide",
    "basis_too_large": "RMM basis size exceeds min(rank, number of members)",
    "invalid_params": "the method's params model rejected the params",
    "unknown_method": "no merge method of that name (message lists the known ones)",
    "merge_not_finite": "the merged factors contain NaN/Inf (inputs too large for fp32?)",
    "rmm_not_a_member": "RMM revert of a member index or name that is not in the artifact",
    "rmm_artifact_invalid": "an RMM artifact lacks tensors or metadata, or they disagree",
    "device_unavailable": "device='cuda' requested but CUDA is not available",
    "bad_device": "a device that is not auto, cpu, cuda or cuda:N",
}


def check_count(n: int) -> None:
    if n < 2:
        raise BadInputError(
            f"a merge needs at least 2 adapters, got {n}", code="merge_too_few_adapters"
        )


def check_adapters(adapters: Sequence[LoraAdapter], labels: Sequence[str]) -> None:
    """Count, mergeability and base-model agreement."""
    check_count(len(adapters))
    for label, ad in zip(labels, adapters, strict=True):
        if not ad.mergeable:
            raise NotMergeableError(
                f"adapter {label} cannot be merged as plain LoRA: {ad.not_mergeable_reason}",
                adapter=label,
                reason=ad.not_mergeable_reason,
            )
    _check_bases(adapters, labels)


def _check_bases(adapters: Sequence[LoraAdapter], labels: Sequence[str]) -> None:
    ref, ref_label = adapters[0].base, labels[0]
    for label, ad in zip(labels[1:], adapters[1:], strict=True):
        b = ad.base
        if ref.model_id and b.model_id and ref.model_id != b.model_id:
            raise IncompatibleBaseModelError(
                f"{label} is for base {b.model_id!r}, {ref_label} for {ref.model_id!r}",
                code="base_model_mismatch",
                adapters=[ref_label, label],
            )
        if ref.fingerprint and b.fingerprint and ref.fingerprint != b.fingerprint:
            raise IncompatibleBaseModelError(
                f"{label} and {ref_label} name the same base but its weights differ "
                f"(fingerprint {b.fingerprint[:12]} vs {ref.fingerprint[:12]})",
                code="base_model_mismatch",
                adapters=[ref_label, label],
            )


MAX_ABS_WEIGHT = 1e6


def check_weights(weights: Sequence[float], n: int, *, allow_negative: bool, method: str) -> None:
    if len(weights) != n:
        raise BadInputError(
            f"{len(weights)} weights for {n} adapters", code="weights_count_mismatch"
        )
    bad = [i for i, w in enumerate(weights) if not math.isfinite(float(w))]
    if bad:
        raise BadInputError(f"weights at positions {bad} are not finite", code="weights_not_finite")
    huge = [i for i, w in enumerate(weights) if abs(float(w)) > MAX_ABS_WEIGHT]
    if huge:
        # fp32 factors times such a weight overflow (or the SVD of their product does)
        raise BadInputError(
            f"weights at positions {huge} exceed {MAX_ABS_WEIGHT:g} in magnitude; a merge weight "
            "scales an adapter's update (typically 0..2)",
            code="weights_too_large",
        )
    neg = [i for i, w in enumerate(weights) if float(w) < 0]
    if neg and not allow_negative:
        raise BadInputError(
            f"method {method!r} forbids negative weights (positions {neg})",
            code="weights_negative",
        )


def align_modules(
    adapters: Sequence[AdapterShapes], labels: Sequence[str], policy: ModulePolicy
) -> list[str]:
    """Module names to merge under ``policy``; shape agreement is checked on each of them."""
    sets = [set(ad.modules) for ad in adapters]
    common = set.intersection(*sets)
    union = set.union(*sets)
    if not common:
        raise BadInputError("the adapters share no adapted module", code="target_modules_disjoint")
    if policy == "strict" and common != union:
        diffs = {lab: sorted(union - s) for lab, s in zip(labels, sets, strict=True) if s != union}
        listing = "; ".join(
            f"{lab} lacks {', '.join(m[:5])}{'...' if len(m) > 5 else ''}"
            for lab, m in diffs.items()
        )
        raise BadInputError(
            f"adapters adapt different modules ({listing}); pass modules='intersection' or "
            "'union' to merge anyway",
            code="module_set_mismatch",
            missing=diffs,
        )
    names = sorted(union if policy == "union" else common)
    for name in names:
        shapes = {
            (ad.modules[name].out_features, ad.modules[name].in_features)
            for ad in adapters
            if name in ad.modules
        }
        if len(shapes) > 1:
            raise BadInputError(
                f"module {name} has different shapes across adapters: {sorted(shapes)}",
                code="module_shape_mismatch",
                module=name,
            )
    return names
