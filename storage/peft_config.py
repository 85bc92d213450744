"""PEFT ``adapter_config.json`` semantics: parsing, rank/alpha patterns, target matching.

The matching rules are copied from PEFT (``peft.utils.other.get_pattern_key`` and
``peft.tuners.tuners_utils.check_target_module_exists``) so that a module gets exactly the rank
and alpha PEFT itself would give it; otherwise a re-exported adapter would load with a
different scale.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from hub.core.errors import InvalidAdapterError
from hub.core.json_input import JSON_ERRORS, unique_keys
from hub.core.lora import LoraAdapter
from storage.regex_guard import UnsafeRegex, check_regex

MAX_CONFIG_BYTES = 1 << 20
# Every key is tried against every module name: bound that product (full-name patterns for a
# 70B all-linear adapter need 560 keys).
MAX_PATTERN_KEYS = 1024
ALL_LINEAR = "all-linear"  # PEFT's shorthand; expanded by PEFT at creation time


def _invalid(message: str, code: str = "config_invalid") -> NoReturn:
    raise InvalidAdapterError(message, code=code)


def _repeated_key(key: str) -> NoReturn:
    _invalid(f"adapter_config.json repeats key {key!r}")


_no_duplicates = unique_keys(_repeated_key)


def _no_constant(name: str) -> NoReturn:
    _invalid(f"adapter_config.json uses non-standard JSON constant {name}")


def _flag(config: Mapping[str, Any], key: str) -> bool:
    # A string "false" must not silently turn rsLoRA/DoRA on: only JSON booleans are accepted.
    value = config.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        _invalid(f"adapter_config.json: {key} must be true or false, got {value!r}")
    return value


def parse_config_bytes(raw: bytes) -> dict[str, Any]:
    """Decode adapter_config.json: size-capped, UTF-8, a JSON object without duplicate keys."""
    if len(raw) > MAX_CONFIG_BYTES:
        _invalid(f"adapter_config.json is {len(raw)} bytes, over the {MAX_CONFIG_BYTES} cap")
    try:
        parsed = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except InvalidAdapterError:
        raise
    except JSON_ERRORS as exc:  # UnicodeDecodeError is a ValueError
        _invalid(f"adapter_config.json is not valid JSON: {str(exc)[:200]}")
    if not isinstance(parsed, dict):
        _invalid(f"adapter_config.json must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive_int(config: Mapping[str, Any], key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _invalid(f"adapter_config.json: {key} must be a positive integer, got {value!r}")
    return value


def _safe_regex(field: str, pattern: str) -> None:
    try:
        check_regex(pattern)
    except UnsafeRegex as exc:
        _invalid(f"adapter_config.json: {field} regex {pattern[:60]!r} is refused: {exc}")


def _pattern_map(config: Mapping[str, Any], key: str, check: Any) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        _invalid(f"adapter_config.json: {key} must be an object")
    if len(value) > MAX_PATTERN_KEYS:
        _invalid(f"adapter_config.json: {key} has more than {MAX_PATTERN_KEYS} keys")
    for pattern, item in value.items():
        check(config, f"{key}[{pattern!r}]", item)
        _safe_regex(key, pattern)
    return dict(value)


def _number(config: Mapping[str, Any], key: str, value: Any) -> float:
    if not _is_number(value):
        _invalid(f"adapter_config.json: {key} must be a number, got {value!r}")
    return value


def _targets(value: Any) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        if isinstance(value, str):
            _safe_regex("target_modules", value)
        return value
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(value)
    _invalid("adapter_config.json: target_modules must be a string, a list of strings or null")


@dataclass(frozen=True)
class LoraSettings:
    """The parts of a LoraConfig that decide how tensors are interpreted."""

    r: int
    lora_alpha: float
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    target_modules: str | list[str] | None
    modules_to_save: list[str]
    use_dora: bool
    bias: str
    lora_bias: bool

    def rank_for(self, module: str) -> int:
        key = get_pattern_key(self.rank_pattern, module)
        return self.rank_pattern.get(key, self.r)

    def alpha_for(self, module: str) -> float:
        key = get_pattern_key(self.alpha_pattern, module)
        return self.alpha_pattern.get(key, self.lora_alpha)

    def targets(self, module: str) -> bool:
        return target_matches(self.target_modules, module)


def check_peft_type(config: Mapping[str, Any]) -> None:
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str):
        _invalid("adapter_config.json has no peft_type string")
    if peft_type.upper() != "LORA":
        _invalid(
            f"peft_type {peft_type[:40]!r} is not supported; only LoRA adapters are accepted",
            code="unsupported_peft_type",
        )


def lora_settings(config: Mapping[str, Any]) -> LoraSettings:
    """Validate the fields we interpret; unknown extra fields are kept but ignored."""
    check_peft_type(config)
    r = _positive_int(config, "r", config.get("r", 8))
    alpha = _number(config, "lora_alpha", config.get("lora_alpha", 8))
    bias = config.get("bias", "none")
    if bias not in ("none", "all", "lora_only"):
        _invalid(f"adapter_config.json: bias {bias!r} is not none/all/lora_only")
    to_save = config.get("modules_to_save") or []
    if not isinstance(to_save, list) or not all(isinstance(m, str) for m in to_save):
        _invalid("adapter_config.json: modules_to_save must be a list of strings")
    return LoraSettings(
        r=r,
        lora_alpha=alpha,
        use_rslora=_flag(config, "use_rslora"),
        rank_pattern=_pattern_map(config, "rank_pattern", _positive_int),
        alpha_pattern=_pattern_map(config, "alpha_pattern", _number),
        target_modules=_targets(config.get("target_modules")),
        modules_to_save=list(to_save),
        use_dora=_flag(config, "use_dora"),
        bias=bias,
        lora_bias=_flag(config, "lora_bias"),
    )


def get_pattern_key(pattern_keys: Any, key_to_match: str) -> str:
    """PEFT's rule: the first pattern ``k`` with ``re.match(rf"(.*\\.)?({k})$", name)``."""
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", key_to_match):
            return key
    return key_to_match


def target_matches(target_modules: str | list[str] | None, module: str) -> bool:
    """PEFT's rule: a string is a regex fullmatched against the name; a list entry matches
    the name exactly or as a dotted suffix. ``None`` means PEFT's per-architecture default,
    which we cannot know here, so everything is accepted."""
    if target_modules is None or target_modules == ALL_LINEAR:
        return True
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module) is not None
    return module in target_modules or any(module.endswith(f".{t}") for t in target_modules)


def architecture_of(config: Mapping[str, Any]) -> str | None:
    """The base model class PEFT recorded (``auto_mapping.base_model_class``), if any."""
    mapping = config.get("auto_mapping")
    if isinstance(mapping, dict) and isinstance(mapping.get("base_model_class"), str):
        return mapping["base_model_class"]
    return None


# ---------------------------------------------------------------- configs for new adapters

# Fields a new adapter must not inherit from a template: they describe other tensors.
_FRESH_DEFAULTS: dict[str, Any] = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "bias": "none",
    "lora_bias": False,
    "use_dora": False,
    "modules_to_save": None,
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "layers_to_transform": None,
    "layers_pattern": None,
    "lora_dropout": 0.0,
    "exclude_modules": None,
    "trainable_token_indices": None,
}


def _most_common(values: list[Any]) -> Any:
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)  # ties: smallest, deterministic


def peft_config_for(
    adapter: LoraAdapter,
    *,
    base_model_name_or_path: str | None,
    template: dict[str, Any] | None = None,
    base_modules: Collection[str] | None = None,
) -> dict[str, Any]:
    """A LoraConfig-shaped dict that makes PEFT rebuild ``adapter`` exactly: the most common
    rank/alpha as defaults, full module names in ``rank_pattern``/``alpha_pattern`` for the
    rest, and targets that adapt the stored modules and no others (``target_fields``)."""
    rslora = {m.use_rslora for m in adapter.modules.values()}
    if len(rslora) != 1:
        _invalid("adapter mixes rsLoRA and plain LoRA modules; PEFT cannot express that")
    modules = dict(adapter.modules)
    r = _most_common([m.rank for m in modules.values()])
    alpha = _most_common([m.alpha for m in modules.values() if m.rank == r])
    config = dict(template or {})
    config.update(_FRESH_DEFAULTS)
    config.update(
        {
            "r": r,
            "lora_alpha": alpha,
            "rank_pattern": {n: m.rank for n, m in modules.items() if m.rank != r},
            "alpha_pattern": {n: m.alpha for n, m in modules.items() if m.alpha != alpha},
            "use_rslora": rslora.pop(),
            "base_model_name_or_path": base_model_name_or_path,
            "revision": adapter.base.revision,
            **target_fields(list(modules), base_modules),
        }
    )
    return config


_LAYER = re.compile(r"(^|\.)layers\.(\d+)\.")


def target_fields(names: list[str], base_modules: Collection[str] | None) -> dict[str, Any]:
    """``target_modules`` (and ``layers_to_transform``) under which PEFT adapts exactly the
    modules ``names``. A merge or revert of an adapter restricted to some layers holds only
    those; leaf names alone made PEFT add the other layers' modules too (zero updates, a
    "missing adapter keys" warning, three times the modules in the layer-10-of-30 case).

    With the base's module names known, the shortest exact form: leaf names (``q_proj``) when
    they select exactly these modules of the base, else leaf names plus ``layers_to_transform``
    when that does, else the full names. Without them only full names are exact: leaf names
    and layer numbers also select other stacks of a base with several (an encoder-decoder's
    encoder and cross-attention, a vision tower). PEFT matches a list entry as the module's
    name or a dotted suffix of it."""
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    full = {"target_modules": sorted(names), "layers_to_transform": None, "layers_pattern": None}
    if base_modules is None:
        return full
    stored = set(names)
    same_leaf = {m for m in base_modules if m.rsplit(".", 1)[-1] in leaves}
    if same_leaf == stored:
        return {"target_modules": leaves, "layers_to_transform": None, "layers_pattern": None}
    layers = {_layer_of(n) for n in names}
    if None not in layers and {m for m in same_leaf if _layer_of(m) in layers} == stored:
        return {
            "target_modules": leaves,
            "layers_to_transform": sorted(i for i in layers if i is not None),
            "layers_pattern": "layers",
        }
    return full


def _layer_of(name: str) -> int | None:
    match = _LAYER.search(name)
    return int(match.group(2)) if match else None
