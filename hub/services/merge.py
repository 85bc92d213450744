"""Merge catalog adapters into a new one, and revert a member out of a reversible (RMM) merge.

A merge is atomic: inputs are loaded digest-verified, the result is built in memory, serialized
and re-read through the same strict validator as an upload (finite, shapes, ranks), and only then
published — artifact blob, weights blob, then one catalog transaction with lineage edges to every
input and the full recipe. A failed merge registers nothing (unlike PEFT, whose half-created
adapter a retry silently returns as zeros).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hub.core.errors import BadInputError
from hub.core.lora import LoraAdapter
from hub.core.models import AdapterMeta
from hub.core.names import AdapterRef
from hub.services.provenance import software_versions
from hub.services.registry import AddResult, RegistryService, as_published
from storage.peft_format import ParsedAdapter, peft_config_for
from storage.safetensors_io import parse_safetensors, serialize_safetensors

ARTIFACT_META_KEY = "loradex.artifact"


@dataclass
class MergeOutcome:
    added: AddResult
    report: dict[str, Any]


class MergeService:
    def __init__(self, registry: RegistryService) -> None:
        self.registry = registry

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
        import merging  # torch is heavy: only commands that compute pay for it

        meta = AdapterMeta(name=name, description=description, tags=list(tags))
        weights = list(weights) if weights is not None else [1.0] * len(refs)
        inputs = [self.registry.show(ref) for ref in refs]
        labels = [f"{d.name}@{d.version}" for d in inputs]
        adapters = [self.registry.load_detail(d).adapter for d in inputs]
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
        base = inputs[0].base_model
        parsed = _validated(result.adapter, base)
        artifact_digest = None
        if result.artifact is not None:
            blob = _artifact_bytes(
                result.artifact.kind, result.artifact.tensors, result.artifact.metadata
            )
            artifact_digest = self.registry.blobs.put_bytes(blob)
        recipe = {
            "method": method,
            "params": merging.get_method(method).parse_params(params).model_dump(mode="json"),
            "weights": weights,
            "seed": seed,
            "inputs": [{"name": d.name, "version": d.version, "digest": d.digest} for d in inputs],
            "report": _jsonable(result.report),
            "software": software_versions(),
        }
        parents = [
            (self.registry.catalog.version_id(d.name, d.version), "merge", float(w))
            for d, w in zip(inputs, weights, strict=True)
        ]
        added = self.registry.add_parsed(
            parsed,
            meta,
            source="merge",
            base_model=base,
            parents=parents,
            recipe=recipe,
            artifact_digest=artifact_digest,
            metadata={"method": method, "members": labels},
        )
        return MergeOutcome(added, recipe["report"])

    def revert(self, merged: AdapterRef, member: str, *, name: str | None = None) -> AddResult:
        """Rebuild ``member`` (NAME or NAME@VERSION of an input) from an RMM merge's artifact."""
        import merging

        detail = self.registry.show(merged)
        if detail.artifact_digest is None:
            raise BadInputError(
                f"{detail.name}@{detail.version} is not a reversible merge (no RMM artifact); "
                "merge with --method rmm to be able to revert",
                code="not_reversible",
            )
        kind, tensors, metadata = _read_artifact(self.registry.blobs.get(detail.artifact_digest))
        members = [f"{p.name}@{p.version}" for p in detail.lineage.parents]
        label = _resolve_member(member, members, f"{detail.name}@{detail.version}")
        adapter = merging.revert(merging.MergeArtifact(kind, tensors, metadata), label)
        member_name = label.split("@")[0]
        meta = AdapterMeta(
            name=name or f"{member_name}.reverted",
            description=f"{label} reverted from the reversible merge "
            f"{detail.name}@{detail.version}",
            tags=["reverted"],
        )
        parents = [(self.registry.catalog.version_id(detail.name, detail.version), "revert", None)]
        recipe = {
            "method": "rmm-revert",
            "merged": f"{detail.name}@{detail.version}",
            "member": label,
            "software": software_versions(),
        }
        parsed = _validated(adapter, detail.base_model)
        return self.registry.add_parsed(
            parsed,
            meta,
            source="reverted",
            base_model=detail.base_model,
            parents=parents,
            recipe=recipe,
            metadata={"member": label},
        )


def _validated(adapter: LoraAdapter, base: str | None) -> ParsedAdapter:
    """Serialize as PEFT files and re-read them with the upload validator: what we publish is
    exactly what a later `export` + `PeftModel.from_pretrained` will see."""
    return as_published(adapter, peft_config_for(adapter, base_model_name_or_path=base))


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
    matches = [m for m in members if member in (m, m.split("@")[0])]
    if len(matches) != 1:
        raise BadInputError(
            f"{member!r} is not a member of {merged}; members: {', '.join(members)}",
            code="rmm_not_a_member",
        )
    return matches[0]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
