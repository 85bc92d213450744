"""Merge catalog adapters into a new one, and revert a member out of a reversible (RMM) merge.

A merge is atomic: inputs are loaded digest-verified, the result is built in memory, serialized
and re-read through the same strict validator as an upload (finite, shapes, ranks), and only then
published — artifact blob, weights blob, then one catalog transaction with lineage edges to every
input and the full recipe. A failed merge registers nothing (unlike PEFT, whose half-created
adapter a retry silently returns as zeros).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hub.core.errors import (
    BadInputError,
    ConflictError,
    IncompatibleBaseModelError,
    NotFoundError,
    NotMergeableError,
)
from hub.core.models import AdapterDetail, AdapterMeta, BaseModelInfo
from hub.core.names import AdapterRef
from hub.core.seeds import check_seed
from hub.services.mixture_store import not_a_lora
from hub.services.provenance import software_versions
from hub.services.registry import AddResult, RegistryService, published_on
from storage.peft_format import ParsedAdapter
from storage.safetensors_io import parse_safetensors, serialize_safetensors

if TYPE_CHECKING:
    from merging import MergeLayout

ARTIFACT_META_KEY = "loradex.artifact"
# Codes the merge service (and `loradex merge` / `revert`) adds to the engine's MERGE_CODES.
SERVICE_CODES: dict[str, str] = {
    "incompatible_base_model": "an input (or the result) does not fit the registered base model",
    "not_reversible": "`revert` of an adapter that is not an RMM merge",
    "rmm_member_ambiguous": "the revert's member NAME matches several versions: pass NAME@VERSION",
    "param_conflict": "a shortcut option (--rank, --density, --basis, --modules) and --param "
    "give the same parameter different values",
    "invalid_name": "the result's name (CLI --name) is not a valid adapter name",
    "seed_out_of_range": "a seed outside 0..2^31-1 (the range every interface accepts)",
    "input_changed": "an input was deleted and its name registered again (other weights) after "
    "the merge was queued or while it ran",
    "input_deleted": "an input was deleted after the merge was queued or while it ran",
}


@dataclass
class MergePlan:
    """What ``merge`` would do: its inputs, the result's name and shape, nothing computed."""

    meta: AdapterMeta  # the result's name and card, checked
    new_adapter: bool  # no adapter of this name yet (else the result is its next version)
    inputs: list[AdapterDetail]
    base_model: str | None
    base_info: BaseModelInfo | None  # the registered base the inputs were checked against
    layout: MergeLayout
    seed: int
    device: str | None  # where it would run (None: the worker that runs the job decides)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def labels(self) -> list[str]:
        return pinned_labels(self.inputs)

    def to_dict(self) -> dict[str, Any]:
        layout = self.layout.to_dict()
        return {
            "dry_run": True,
            "name": self.name,
            "new_adapter": self.new_adapter,
            "inputs": self.labels,
            "base_model": self.base_model,
            "seed": self.seed,
            "device": self.device,
            "rank": max(self.layout.module_ranks.values()),
            "output_bytes": 4 * self.layout.output_parameters,  # fp32 factors, before the header
            **layout,
        }


@dataclass
class MergeOutcome:
    added: AddResult
    report: dict[str, Any]


class MergeService:
    def __init__(self, registry: RegistryService) -> None:
        self.registry = registry

    def plan(
        self,
        refs: Sequence[AdapterRef],
        *,
        method: str,
        name: str,
        weights: Sequence[float] | None = None,
        params: dict[str, Any] | None = None,
        description: str = "",
        tags: Sequence[str] = (),
        device: str | None = "auto",
        seed: int = 0,
    ) -> MergePlan:
        """Every check of ``merge`` that needs no weights, from the catalog alone, and what it
        would produce; writes nothing (``loradex merge --dry-run``, ``POST /merges``).
        ``device=None`` leaves the device to the worker that will run the job."""
        import merging  # torch is heavy: only commands that compute pay for it
        from merging.engine import resolve_device
        from merging.validation import Shapes

        check_seed(seed)  # the recipe's seed must replay through every interface
        meta = AdapterMeta(name=name, description=description, tags=list(tags))  # name, card
        merging.get_method(method).parse_params(params)  # a typo is named before any lookup
        inputs = [self.registry.show(ref) for ref in refs]
        labels = pinned_labels(inputs)
        for d, label in zip(inputs, labels, strict=True):
            if d.source == "mixture":
                raise not_a_lora(d, "a merge")
            if not d.mergeable:
                raise NotMergeableError(
                    f"adapter {label} cannot be merged as plain LoRA: {d.not_mergeable_reason}",
                    adapter=label,
                    reason=d.not_mergeable_reason,
                )
        base = check_same_base(inputs)  # the catalog's base ids and fingerprints, not the files'
        base_info = self.registry.catalog.get_base_model(base) if base else None
        if base_info is not None:  # refuse now what publishing would refuse after the compute
            for d, label in zip(inputs, labels, strict=True):
                shapes = {m.name: (m.in_features, m.out_features) for m in d.modules}
                with _labelled(label):
                    self.registry.check_shapes(shapes, base_info)
        layout = merging.plan(
            [Shapes({m.name: m for m in d.modules}) for d in inputs],
            method,
            params,
            weights,
            labels,
        )
        where = None if device is None else str(resolve_device(device))
        new = not self.registry.exists(name)
        return MergePlan(meta, new, inputs, base, base_info, layout, seed, where)

    def merge(
        self,
        refs: Sequence[AdapterRef],
        *,
        method: str,
        name: str,
        weights: Sequence[float] | None = None,
        params: dict[str, Any] | None = None,
        description: str = "",
        tags: Sequence[str] = (),
        device: str = "auto",
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> MergeOutcome:
        """``plan`` (every check that needs no weights), then load the inputs digest-verified,
        compute, validate the result and publish it with lineage and the full recipe."""
        import merging

        plan = self.plan(
            refs,
            method=method,
            name=name,
            weights=weights,
            params=params,
            description=description,
            tags=tags,
            device=device,
            seed=seed,
        )
        inputs, base, weights = plan.inputs, plan.base_model, plan.layout.weights
        labels = plan.labels
        adapters = [self.registry.load_detail(d).adapter for d in inputs]  # digest-verified
        result = merging.merge(
            adapters,
            weights,
            method,
            params,
            device=device,
            seed=seed,
            progress=progress,
            names=labels,
        )
        parsed = published_on(result.adapter, base, plan.base_info)  # the base plan() read
        if plan.base_info is not None:
            with _labelled("the merged adapter"):
                self.registry.check_compatible(parsed, plan.base_info)
        self._check_inputs_unchanged(inputs)  # before any write: lineage must name them
        artifact_digest, artifact_warnings = None, []
        if result.artifact is not None:  # written only once nothing left can refuse the result
            blob = _artifact_bytes(
                result.artifact.kind, result.artifact.tensors, result.artifact.metadata
            )
            artifact_warnings = self._artifact_not_kept(plan.meta.name, parsed, blob)
            if not artifact_warnings:
                artifact_digest = self.registry.blobs.put_bytes(blob)
        # the engine reports ranks and skipped modules; which inputs lacked each module a union
        # merged is the plan's (the same shapes and labels), kept so the dry run's prediction
        # can be checked on the result
        report = {**_jsonable(result.report), "modules_partial": plan.layout.modules_partial}
        recipe: dict[str, Any] = {
            "method": method,
            "params": plan.layout.params,
            "weights": weights,
            "seed": seed,
            "inputs": [{"name": d.name, "version": d.version, "digest": d.digest} for d in inputs],
            "report": report,
            "software": software_versions(),
        }
        unrecorded = [label for label, d in zip(labels, inputs, strict=True) if not d.base_model]
        if base and unrecorded:  # fitted to the base by shape only: the recipe says so
            recipe["base_unrecorded"] = unrecorded
        parents = [
            (self.registry.catalog.version_id(d.name, d.version), "merge", float(w))
            for d, w in zip(inputs, weights, strict=True)
        ]
        added = self.registry.add_parsed(
            parsed,
            plan.meta,
            source="merge",
            base_model=base,
            parents=parents,
            recipe=recipe,
            artifact_digest=artifact_digest,
            metadata={"method": method, "members": labels},
            warn_base=False,
        )
        added.warnings.extend(artifact_warnings)
        return MergeOutcome(added, report)

    def _check_inputs_unchanged(self, inputs: Sequence[AdapterDetail]) -> None:
        """An input deleted (or deleted and registered again) while the merge computed: its
        parent edge would name a row that is gone or holds other weights."""
        for d, label in zip(inputs, pinned_labels(inputs), strict=True):
            now = self.registry.current_digest(d.name, d.version)
            if now is None:
                raise NotFoundError(
                    f"{label} was deleted while the merge ran; nothing was registered",
                    code="input_deleted",
                )
            if now != d.digest:
                raise ConflictError(
                    f"{label} was deleted and registered again with other weights while the "
                    "merge ran; nothing was registered",
                    code="input_changed",
                )

    def _artifact_not_kept(self, name: str, parsed: ParsedAdapter, blob: bytes) -> list[str]:
        """When ``name`` already holds the merged weights, registering writes nothing, so the
        artifact would be an unreferenced blob: say so instead of writing it, unless that
        version is this same merge (its artifact is then already stored)."""
        held = self.registry.version_with_digest(
            name, hashlib.sha256(parsed.weights_bytes).hexdigest()
        )
        if held is None:
            return []
        existing = self.registry.show(AdapterRef(held.name, held.version))
        if existing.artifact_digest == hashlib.sha256(blob).hexdigest():
            return []
        return [
            f"{held.name}@{held.version} already holds these weights without this merge's RMM "
            "artifact, so it stays as it was and cannot revert this merge's members; merge "
            "under another --name to keep the artifact"
        ]

    def revert(self, merged: AdapterRef, member: str, *, name: str | None = None) -> AddResult:
        """Rebuild ``member`` (NAME or NAME@VERSION of an input) from an RMM merge's artifact."""
        import merging

        detail = self.registry.show(merged)
        if detail.artifact_digest is None:
            raise BadInputError(
                f"{detail.name}@{detail.version} is not a reversible merge (no RMM artifact); "
                "merge with method rmm (CLI --method rmm) to be able to revert",
                code="not_reversible",
            )
        kind, tensors, metadata = _read_artifact(self.registry.blobs.get(detail.artifact_digest))
        members = [f"{p.name}@{p.version}" for p in detail.lineage.parents]
        label = _resolve_member(member, members, f"{detail.name}@{detail.version}")
        meta = AdapterMeta(  # a bad --name fails here, before the reconstruction
            name=name if name is not None else f"{label.split('@')[0]}.reverted",
            description=f"{label} reverted from the reversible merge "
            f"{detail.name}@{detail.version}",
            tags=["reverted"],
        )
        adapter = merging.revert(merging.MergeArtifact(kind, tensors, metadata), label)
        parents = [(self.registry.catalog.version_id(detail.name, detail.version), "revert", None)]
        recipe = {
            "method": "rmm-revert",
            "merged": f"{detail.name}@{detail.version}",
            "member": label,
            "software": software_versions(),
        }
        base = detail.base_model
        info = self.registry.catalog.get_base_model(base) if base else None
        parsed = published_on(adapter, base, info)
        return self.registry.add_parsed(
            parsed,
            meta,
            source="reverted",
            base_model=detail.base_model,
            parents=parents,
            recipe=recipe,
            metadata={"member": label},
            warn_base=False,
        )


def pinned_labels(inputs: Sequence[AdapterDetail]) -> list[str]:
    """NAME@VERSION of each input: what errors, the artifact and a queued job name them by."""
    return [f"{d.name}@{d.version}" for d in inputs]


@contextmanager
def _labelled(label: str) -> Iterator[None]:
    """Prefix a base-model refusal with the adapter it is about."""
    try:
        yield
    except IncompatibleBaseModelError as exc:
        raise IncompatibleBaseModelError(f"{label}: {exc.message}", **exc.details) from None


def _artifact_bytes(kind: str, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> bytes:
    doc = json.dumps({"kind": kind, "metadata": metadata}, sort_keys=True)
    return serialize_safetensors(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
        metadata={ARTIFACT_META_KEY: doc},
    )


def _read_artifact(data: bytes) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    parsed = parse_safetensors(data)
    doc = json.loads(parsed.metadata[ARTIFACT_META_KEY])
    return doc["kind"], dict(parsed.tensors), doc["metadata"]


def _resolve_member(member: str, members: list[str], merged: str) -> str:
    """NAME@VERSION, or a bare NAME that names one member version (the same version merged
    twice is one member: both copies revert to the same adapter)."""
    matches = sorted({m for m in members if member in (m, m.split("@")[0])})
    if not matches:
        raise BadInputError(
            f"{member!r} is not a member of {merged}; members: {', '.join(members)}",
            code="rmm_not_a_member",
        )
    if len(matches) > 1:
        raise BadInputError(
            f"{member!r} matches several members of {merged} ({', '.join(matches)}): "
            "pass NAME@VERSION",
            code="rmm_member_ambiguous",
        )
    return matches[0]


def check_same_base(items: Sequence[Any]) -> str | None:
    """Inputs that record a base model (and weights fingerprint) must record the same one
    (catalog items or details: ``base_model``, ``base_model_fingerprint``); returns that base,
    or None when no input records one. An input with no recorded base is checked by shape only
    and does not take the result's base away from the others (whatever its position)."""
    for field in ("base_model", "base_model_fingerprint"):
        named = [item for item in items if getattr(item, field)]
        for item in named[1:]:
            a, b = getattr(named[0], field), getattr(item, field)
            if a != b:
                what = "base" if field == "base_model" else "base weights (fingerprint)"
                raise IncompatibleBaseModelError(
                    f"{item.name}@{item.version} is for {what} {b!r}, "
                    f"{named[0].name}@{named[0].version} for {a!r}",
                    code="base_model_mismatch",
                )
    return next((item.base_model for item in items if item.base_model), None)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
