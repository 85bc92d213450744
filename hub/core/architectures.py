"""Module shapes of a base model from its Hugging Face ``config.json`` (pure, no I/O).

One function per architecture family, registered by ``model_type``; unknown types raise a typed
error listing the known ones. Shapes are ``(d_in, d_out)`` per full module name, the same names
PEFT keys use after ``base_model.model.``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hub.core.errors import UnknownNameError

ShapeFn = Callable[[Mapping[str, Any]], dict[str, tuple[int, int]]]
ARCHITECTURES: dict[str, ShapeFn] = {}


def register_architecture(*model_types: str) -> Callable[[ShapeFn], ShapeFn]:
    def deco(fn: ShapeFn) -> ShapeFn:
        for t in model_types:
            ARCHITECTURES[t] = fn
        return fn

    return deco


@register_architecture("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
def _decoder_only(cfg: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg["intermediate_size"])
    per_layer = {
        "self_attn.q_proj": (hidden, heads * head_dim),
        "self_attn.k_proj": (hidden, kv_heads * head_dim),
        "self_attn.v_proj": (hidden, kv_heads * head_dim),
        "self_attn.o_proj": (heads * head_dim, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }
    return {
        f"model.layers.{i}.{name}": shape
        for i in range(int(cfg["num_hidden_layers"]))
        for name, shape in per_layer.items()
    }


def module_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``config.json`` -> {module name: (d_in, d_out)} for every adaptable linear layer."""
    model_type = str(config.get("model_type", ""))
    if model_type not in ARCHITECTURES:
        raise UnknownNameError(
            f"unknown architecture {model_type!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    try:
        return ARCHITECTURES[model_type](config)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnknownNameError(
            f"config.json for {model_type!r} lacks a usable field: {exc}"
        ) from exc


def shape_problems(
    adapter_shapes: Mapping[str, tuple[int, int]], base_shapes: Mapping[str, tuple[int, int]]
) -> list[str]:
    """Human-readable incompatibilities: unknown modules and (d_in, d_out) mismatches."""
    problems = []
    for name, shape in adapter_shapes.items():
        expected = base_shapes.get(name)
        if expected is None:
            problems.append(f"module {name} does not exist in the base model")
        elif tuple(expected) != tuple(shape):
            problems.append(
                f"module {name}: adapter has (in={shape[0]}, out={shape[1]}), "
                f"base model has (in={expected[0]}, out={expected[1]})"
            )
    return problems
