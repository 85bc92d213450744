"""Classify the tensor keys of a PEFT LoRA safetensors file.

Every key must land in exactly one bucket: a LoRA factor, or a known non-LoRA tensor that we
record faithfully (DoRA magnitudes, trained biases, ``modules_to_save`` copies, embedding LoRA,
trainable tokens) and that makes the adapter non-mergeable. Anything else is refused, because a
tensor we do not understand would be silently dropped by a merge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hub.core.errors import InvalidAdapterError
from storage.peft_config import LoraSettings

PREFIX = "base_model.model."
_ADAPTER = r"(?:\.[^.]+)?"  # optional adapter name PEFT may leave in keys, e.g. ".default"
_FACTOR = re.compile(rf"^(?P<mod>.+)\.lora_(?P<ab>[AB]){_ADAPTER}\.weight$")
_EMBED = re.compile(rf"^(?P<mod>.+)\.lora_embedding_(?P<ab>[AB]){_ADAPTER}$")
_DORA = re.compile(rf"^(?P<mod>.+)\.lora_magnitude_vector{_ADAPTER}(?:\.weight)?$")
_LORA_BIAS = re.compile(rf"^(?P<mod>.+)\.lora_B{_ADAPTER}\.bias$")
_TOKENS = re.compile(rf"^(?P<mod>.+)\.token_adapter\.trainable_tokens_delta{_ADAPTER}$")
_FULL = re.compile(
    r"^(?P<mod>.+?)(?:\.base_layer)?(?:\.modules_to_save\.[^.]+)?\.(?P<p>weight|bias)$"
)

REASONS = {
    "dora": "DoRA adapter: magnitude vectors make the update non-linear in the factors; "
    "merging it as LoRA would be silently wrong.",
    "bias": "Adapter trains biases; a LoRA merge only combines the low-rank factors and would "
    "drop them.",
    "modules_to_save": "Adapter ships full copies of modules (modules_to_save); a LoRA merge "
    "would drop or average them incorrectly.",
    "embedding": "Adapter applies LoRA to embeddings or ships embedding weights; those are not "
    "linear-layer updates and are not merged.",
    "tokens": "Adapter trains token embeddings (trainable_token_indices); a LoRA merge would "
    "drop them.",
}


@dataclass
class KeyInventory:
    """Where each tensor key went. ``factors[module]["A"|"B"]`` -> (key, array)."""

    factors: dict[str, dict[str, tuple[str, np.ndarray]]] = field(default_factory=dict)
    embeddings: dict[str, dict[str, tuple[str, np.ndarray]]] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    reasons: set[str] = field(default_factory=set)


_MODULE_NAME = re.compile(r"[\w.\-]{1,256}")


def _check_name(key: str, module: str) -> str:
    # Bounded, plain names keep config regexes (matched against them) cheap and safe.
    if not _MODULE_NAME.fullmatch(module):
        raise _unknown(key, "module name is empty, longer than 256 or has odd characters")
    return module


def _unknown(key: str, why: str) -> InvalidAdapterError:
    return InvalidAdapterError(f"unknown tensor {key!r}: {why}", code="unknown_tensor", key=key)


def _is_save_module(settings: LoraSettings, module: str) -> bool:
    return any(module == m or module.endswith(f".{m}") for m in settings.modules_to_save)


def _is_embedding_module(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return "embed" in leaf or leaf in ("lm_head", "wte", "wpe", "shared")


def _classify_extra(
    key: str, rest: str, array: np.ndarray, settings: LoraSettings, inv: KeyInventory
) -> None:
    """A key that is not a linear LoRA factor: record it or refuse it."""
    for pattern, reason in ((_DORA, "dora"), (_LORA_BIAS, "bias"), (_TOKENS, "tokens")):
        if pattern.match(rest):
            inv.extras[key] = array
            inv.reasons.add(reason)
            return
    full = _FULL.match(rest)
    if full is None:
        raise _unknown(key, "not a PEFT LoRA tensor name")
    module, part = full["mod"], full["p"]
    if _is_save_module(settings, module):
        inv.reasons.add("modules_to_save")
    elif part == "bias" and settings.bias != "none":
        inv.reasons.add("bias")
    elif part == "weight" and _is_embedding_module(module):
        inv.reasons.add("embedding")  # PEFT's save_embedding_layers copies of embeddings
    else:
        raise _unknown(key, "a full weight that the config does not account for")
    inv.extras[key] = array


def classify_keys(tensors: dict[str, np.ndarray], settings: LoraSettings) -> KeyInventory:
    inv = KeyInventory()
    for key, array in tensors.items():
        if not key.startswith(PREFIX):
            raise _unknown(key, f"PEFT keys start with {PREFIX!r}")
        rest = key[len(PREFIX) :]
        if m := _FACTOR.match(rest):
            _put(inv.factors, _check_name(key, m["mod"]), m["ab"], key, array)
        elif m := _EMBED.match(rest):
            _put(inv.embeddings, _check_name(key, m["mod"]), m["ab"], key, array)
            inv.extras[key] = array
            inv.reasons.add("embedding")
        else:
            _classify_extra(key, rest, array, settings, inv)
    if settings.use_dora:
        inv.reasons.add("dora")
    if settings.bias != "none" or settings.lora_bias:
        inv.reasons.add("bias")
    return inv


def factor_shapes(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) per module from the shapes of its LoRA factor keys alone, e.g. read off a
    safetensors header: lora_A is (r, d_in), lora_B is (d_out, r). Other keys, and modules
    without both 2-D factors, are left out: only the full validation can judge those."""
    found: dict[str, dict[str, Sequence[int]]] = {}
    for key, shape in shapes.items():
        m = _FACTOR.match(key[len(PREFIX) :]) if key.startswith(PREFIX) else None
        if m is not None and len(shape) == 2:
            found.setdefault(m["mod"], {})[m["ab"]] = shape
    return {
        module: (int(ab["A"][1]), int(ab["B"][0]))
        for module, ab in found.items()
        if "A" in ab and "B" in ab
    }


def _put(
    bucket: dict[str, dict[str, tuple[str, np.ndarray]]],
    module: str,
    ab: str,
    key: str,
    array: np.ndarray,
) -> None:
    slot = bucket.setdefault(module, {})
    if ab in slot:
        raise InvalidAdapterError(
            f"module {module!r} has two lora_{ab} tensors ({slot[ab][0]!r} and {key!r})",
            code="lora_duplicate_factor",
            module=module,
        )
    slot[ab] = (key, array)


def not_mergeable_reason(reasons: set[str]) -> str | None:
    if not reasons:
        return None
    return " ".join(REASONS[r] for r in REASONS if r in reasons)
