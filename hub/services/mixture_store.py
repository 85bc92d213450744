"""How a mixture sits in the catalog, and what every LoRA-only path does with one.

A mixture version is an ordinary catalog version with ``source: mixture``:

- its blob (``digest``) is the **gate**: a safetensors file whose tensors are the classifier's,
  named as PEFT names them (``base_model.internal_xlora_classifier.layers.<i>.{weight,bias}``),
  and whose ``__metadata__["loradex.mixture"]`` is the mixture document (JSON): format, the
  experts by ``name``, ``version`` and ``digest``, the gate config (routing, depth, modules in
  model order...), the training recipe;
- its ``config`` is a PEFT ``XLoraConfig`` (``peft_type: XLORA``, ``adapters`` keyed "0".."n-1"
  naming the experts) plus the same document under ``loradex_mixture``;
- lineage edges, relation ``mixture``, to every expert (weight = its index); ``mergeable`` is
  false (``NOT_MERGEABLE``); modules and ranks are the union of the experts' modules with the
  experts' ranks stacked (what the runtime computes per module).

Experts are references, so an expert a mixture uses cannot be removed (``check_removable``).
Paths that need plain LoRA weights call ``RegistryService.load``, which refuses a mixture with
``mixture_not_lora``; ``export`` writes the directory described in ``export_mixture``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hub.core.errors import BadInputError, ConflictError, NotFoundError
from hub.core.lora import LoraAdapter
from hub.core.models import AdapterDetail, AdapterItem
from hub.core.names import AdapterRef
from storage.peft_format import refuse_export_destination
from storage.safetensors_io import parse_safetensors, serialize_safetensors

if TYPE_CHECKING:
    from hub.services.registry import RegistryService

MIXTURE_SOURCE = "mixture"
MIXTURE_RELATION = "mixture"
FORMAT = "loradex.mixture/1"
META_KEY = "loradex.mixture"
PEFT_PREFIX = "base_model.internal_xlora_classifier."
DOC_NAME = "loradex_mixture.json"
NOT_MERGEABLE = (
    "an X-LoRA mixture is a learned gate over frozen experts, not one LoRA update; merge its "
    "experts instead"
)


@dataclass(frozen=True)
class MixtureDoc:
    """The mixture document plus the gate tensors (PEFT-free names: ``layers.0.weight``)."""

    doc: dict[str, Any]
    gate: dict[str, np.ndarray]

    @property
    def experts(self) -> list[dict[str, Any]]:
        return list(self.doc["experts"])

    @property
    def labels(self) -> list[str]:
        return [f"{e['name']}@{e['version']}" for e in self.experts]


def is_mixture(item: AdapterItem) -> bool:
    return item.source == MIXTURE_SOURCE


def not_a_lora(item: AdapterItem, what: str = "this operation") -> BadInputError:
    experts = item.metadata.get("mixture", {}).get("experts", [])
    return BadInputError(
        f"{item.name}@{item.version} is an X-LoRA mixture (a gate over the experts "
        f"{', '.join(experts)}), not a LoRA adapter; {what} needs LoRA weights: use its experts",
        code="mixture_not_lora",
    )


def gate_blob(doc: dict[str, Any], gate: dict[str, np.ndarray]) -> bytes:
    tensors = {PEFT_PREFIX + k: np.ascontiguousarray(v, np.float32) for k, v in gate.items()}
    return serialize_safetensors(tensors, metadata={META_KEY: json.dumps(doc, sort_keys=True)})


def read_mixture(registry: RegistryService, item: AdapterItem) -> MixtureDoc:
    """The document and gate of a mixture version (its blob, digest-verified)."""
    if not is_mixture(item):
        raise BadInputError(f"{item.name}@{item.version} is not a mixture", code="not_a_mixture")
    parsed = parse_safetensors(registry.blobs.get(item.digest))
    doc = json.loads(parsed.metadata[META_KEY])
    if doc.get("format") != FORMAT:
        raise BadInputError(f"unknown mixture format {doc.get('format')!r}", code="invalid_gate")
    gate = {k.removeprefix(PEFT_PREFIX): np.asarray(v) for k, v in parsed.tensors.items()}
    return MixtureDoc(doc, gate)


def load_experts(registry: RegistryService, mixture: MixtureDoc) -> list[LoraAdapter]:
    """The expert adapters, checked against the digests the mixture was trained with."""
    adapters = []
    for ref in mixture.experts:
        try:
            detail = registry.show(AdapterRef(ref["name"], int(ref["version"])))
        except NotFoundError:
            raise NotFoundError(
                f"expert {ref['name']}@{ref['version']} of this mixture no longer exists",
                code="mixture_expert_missing",
            ) from None
        if detail.digest != ref["digest"]:
            raise ConflictError(
                f"expert {ref['name']}@{ref['version']} has digest {detail.digest[:12]}…, "
                f"the mixture was trained on {ref['digest'][:12]}…",
                code="mixture_expert_changed",
            )
        adapters.append(registry.load(AdapterRef(detail.name, detail.version)).adapter)
    return adapters


def lora_members(registry: RegistryService, item: AdapterItem) -> list[LoraAdapter]:
    """The LoRA adapters that stand for a version in weight space: itself, or a mixture's
    experts (search embeds a mixture as the mean of its experts)."""
    if is_mixture(item):
        return load_experts(registry, read_mixture(registry, item))
    return [registry.load(AdapterRef(item.name, item.version)).adapter]


def check_removable(registry: RegistryService, name: str, version: int | None) -> None:
    """Refuse to remove an expert that a mixture still uses (the mixture would dangle)."""
    users = []
    mixtures, _ = registry.ls(source=MIXTURE_SOURCE, all_versions=True, limit=10**9)
    for mixture in mixtures:
        if mixture.name == name:
            continue  # removing the mixture itself (or a sibling version) is fine
        for expert in mixture.metadata.get("mixture", {}).get("experts", []):
            e_name, _, e_version = expert.partition("@")
            if e_name == name and (version is None or int(e_version) == version):
                users.append(f"{mixture.name}@{mixture.version}")
    if users:
        target = name if version is None else f"{name}@{version}"
        raise ConflictError(
            f"{target} is an expert of the mixture(s) {', '.join(sorted(set(users)))}; remove "
            "those first",
            code="expert_in_use",
            mixtures=sorted(set(users)),
        )


# -- export -------------------------------------------------------------------------------------
def peft_config(doc: dict[str, Any], expert_paths: list[str], base: str | None) -> dict[str, Any]:
    """PEFT ``XLoraConfig`` fields (adapters keyed "0".."n-1": PEFT 0.21.2 breaks on others)."""
    gate = doc["gate"]
    return {
        "peft_type": "XLORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "hidden_size": gate["hidden_size"],
        "adapters": {str(i): p for i, p in enumerate(expert_paths)},
        "enable_softmax": gate["softmax"],
        "enable_softmax_topk": gate["softmax_topk"],
        "layerwise_scalings": gate["layerwise"],
        "xlora_depth": gate["depth"],
        "xlora_size": gate["size"],
        "xlora_dropout_p": gate["dropout"],
        "use_trainable_adapters": False,
        "softmax_temperature": gate["temperature"],
        "top_k_lora": gate["top_k"],
        "scaling_pass_value": 0.0,
        "global_scaling_weight": gate["global_scaling"],
        "inference_mode": True,
    }


def export_mixture(registry: RegistryService, detail: AdapterDetail, out_dir: Path) -> Path:
    """Write ``out_dir`` atomically: ``0/ .. n-1/`` (each expert's PEFT directory, as exported),
    ``adapter_model.safetensors`` (the gate, every classifier tensor), ``loradex_mixture.json``
    and ``adapter_config.json``. Token-routed mixtures are PEFT X-LoRA directories
    (``PeftModel.from_pretrained(base, out_dir)``); prompt-routed ones have no PEFT equivalent,
    so they get no ``adapter_config.json``: PEFT refuses the directory rather than silently
    routing per token, and loradex's document says how to run it."""
    out_dir = Path(out_dir).absolute()
    refuse_export_destination(out_dir)
    mixture = read_mixture(registry, detail)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        for i, label in enumerate(mixture.labels):
            registry.export(AdapterRef.parse(label), tmp / str(i))
        (tmp / "adapter_model.safetensors").write_bytes(registry.blobs.get(detail.digest))
        (tmp / DOC_NAME).write_text(json.dumps(mixture.doc, indent=2, sort_keys=True) + "\n")
        if mixture.doc["gate"]["routing"] == "token":  # prompt routing has no PEFT twin
            paths = [str(out_dir / str(i)) for i in range(len(mixture.labels))]
            config = peft_config(mixture.doc, paths, detail.base_model)
            (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
