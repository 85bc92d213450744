"""Module shapes of a base model from its Hugging Face ``config.json`` (pure, no I/O).

One function per architecture family, registered by ``model_type``; unknown types raise a typed
error listing the known ones. Shapes are ``(d_in, d_out)`` per full module name, the same names
PEFT keys use after ``base_model.model.``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hub.core.errors import BadInputError, UnknownNameError

ShapeFn = Callable[[Mapping[str, Any]], dict[str, tuple[int, int]]]
ARCHITECTURES: dict[str, ShapeFn] = {}


def register_architecture(*model_types: str) -> Callable[[ShapeFn], ShapeFn]:
    def deco(fn: ShapeFn) -> ShapeFn:
        for t in model_types:
            ARCHITECTURES[t] = fn
        return fn

    return deco


# The adaptable linear layers of one decoder layer (``model.layers.N.`` + these).
DECODER_LAYER_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@register_architecture("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
def _decoder_only(cfg: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg["intermediate_size"])
    shapes = (  # (d_in, d_out) in DECODER_LAYER_MODULES order
        (hidden, heads * head_dim),
        (hidden, kv_heads * head_dim),
        (hidden, kv_heads * head_dim),
        (heads * head_dim, hidden),
        (hidden, inter),
        (hidden, inter),
        (inter, hidden),
    )
    per_layer = dict(zip(DECODER_LAYER_MODULES, shapes, strict=True))
    return {
        f"model.layers.{i}.{name}": shape
        for i in range(int(cfg["num_hidden_layers"]))
        for name, shape in per_layer.items()
    }


# Size fields a base config may carry -> (required by the shape functions, upper bound).
SIZE_FIELDS: dict[str, tuple[bool, int]] = {
    "hidden_size": (True, 1_000_000),
    "intermediate_size": (True, 1_000_000),
    "num_hidden_layers": (True, 10_000),
    "num_attention_heads": (True, 100_000),
    "num_key_value_heads": (False, 100_000),
    "head_dim": (False, 100_000),
    "vocab_size": (False, 10_000_000),
}


def _invalid(message: str) -> BadInputError:
    return BadInputError(f"invalid base model config: {message}", code="base_config_invalid")


def validate_base_config(config: Any) -> Mapping[str, Any]:
    """Refuse a base ``config.json`` that is not an object, whose ``architectures`` is not a list
    of strings, or whose size fields are not positive integers within sane bounds (a typo such as
    ``num_hidden_layers: 1e12`` would otherwise exhaust memory). Returns ``config``."""
    if not isinstance(config, Mapping):
        raise _invalid(f"expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise _invalid(f"'model_type' must be a string, got {model_type!r}")
    archs = config.get("architectures")
    if archs is not None and (
        not isinstance(archs, list) or not all(isinstance(a, str) and a for a in archs)
    ):
        raise _invalid(
            f"'architectures' must be a list of non-empty strings "
            f'(e.g. ["LlamaForCausalLM"]), got {archs!r}'
        )
    if model_type not in ARCHITECTURES:
        return config  # module_shapes names the known architectures
    for field, (required, bound) in SIZE_FIELDS.items():
        value = config.get(field)
        if value is None:
            if required:
                raise _invalid(f"missing field {field!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
            raise _invalid(f"{field!r} must be an integer from 1 to {bound:,}, got {value!r}")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if config.get("head_dim") is None and hidden < heads:
        raise _invalid(
            f"'hidden_size' ({hidden}) is smaller than 'num_attention_heads' ({heads}) "
            "and no 'head_dim' is given"
        )
    return config


def module_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``config.json`` -> {module name: (d_in, d_out)} for every adaptable linear layer."""
    validate_base_config(config)
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


def target_problem(targets: Sequence[str], module_names: Iterable[str]) -> str | None:
    """Why PEFT ``target_modules`` would not work on a base with ``module_names`` (None if they
    do): each target must match a module the way PEFT matches (the whole name or a ``.``-suffix)."""
    names = list(module_names)
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    if not targets:
        return f"no target modules given; valid target modules: {', '.join(leaves)}"
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            return f"unknown target module {t!r}; valid target modules: {', '.join(leaves)}"
    return None


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
