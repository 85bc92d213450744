"""Merge-method registry (mergekit style): every method is a small self-describing unit.

A ``MethodSpec`` carries the name users type, a pretty name, a paper/URL reference, a pydantic
params model (``extra="forbid"``) and the function that merges one ``ModuleBatch``. Nothing
dispatches on method-name strings elsewhere: the engine asks the spec.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

from hub.core.errors import UnknownNameError
from merging.batch import MergeContext, ModuleBatch


class MergeParams(BaseModel):
    """Params every method accepts. ``modules`` is the module-set policy of the engine."""

    # strict: `rank=true` or `rank=4.0` is a mistake, not rank 1 / rank 4 (pydantic's lax mode
    # would coerce both); ints still pass where floats are expected. NaN/inf are refused as
    # "not a finite number" (NaN would otherwise fail a bound check with a misleading message)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    modules: Literal["strict", "intersection", "union"] = Field(
        "strict", description="what to do when inputs adapt different modules"
    )


@dataclass
class BatchOutput:
    """What a method returns for one batch: merged factors (scaling 1) and optional extras."""

    B: torch.Tensor  # (m, d_out, k)
    A: torch.Tensor  # (m, k, d_in)
    rel_error: torch.Tensor | None = None  # (m,), meaning given by spec.error_reference
    artifact: dict[str, torch.Tensor] | None = None  # field -> (m, ...), stored per module
    fallbacks: int = 0  # fast-path modules that fell back to the exact path


MergeFn = Callable[[ModuleBatch, Any, MergeContext], BatchOutput]


def rank_param_or_largest(params: Any, ranks: tuple[int, ...]) -> int:
    """Output rank of a module: the ``rank`` param when the method has one and it is set, else
    the largest input rank (PEFT's ``svd_rank`` default; the factor-wise methods' common r)."""
    rank = getattr(params, "rank", None)
    return int(rank) if rank is not None else max(ranks)


def sum_of_ranks(params: Any, ranks: tuple[int, ...]) -> int:
    return sum(ranks)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    pretty_name: str
    reference: str
    params: type[MergeParams]
    fn: MergeFn
    description: str = ""
    equal_ranks: bool = False  # PEFT factor-wise methods: every member must have the same r
    rank_limit: Literal["total", "dims", None] = None  # how far params.rank may go
    allow_negative_weights: bool = True
    dense: bool = False  # materializes d_out x d_in per member: run one module at a time
    error_reference: str | None = None  # what BatchOutput.rel_error is measured against
    artifact_kind: str | None = None  # set when the method returns a revertible artifact
    precheck: Callable[[Any, tuple[int, ...]], None] | None = None  # (params, member ranks)
    # (params, ranks of the inputs holding a module) -> that module's output rank: what a dry
    # run promises, and a test holds every method to it against a real merge
    output_rank: Callable[[Any, tuple[int, ...]], int] = rank_param_or_largest
    # (params, d_out, d_in, ranks) -> numbers the artifact stores for one module
    artifact_size: Callable[[Any, int, int, tuple[int, ...]], int] | None = None

    def parse_params(self, params: dict[str, Any] | None) -> MergeParams:
        """Validate ``params``; pydantic errors become one BadInputError(code=invalid_params)."""
        from pydantic import ValidationError

        from hub.core.errors import BadInputError

        try:
            return self.params.model_validate(params or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(params)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise BadInputError(
                f"invalid params for method {self.name!r}: {problems}",
                code="invalid_params",
                method=self.name,
            ) from None


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"merge method {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # Built-ins register on import, through the same hook a plugin would use.
    import merging.methods  # noqa: F401


def get_method(name: str) -> MethodSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownNameError(
            f"unknown merge method {name!r}; known methods: {known}",
            code="unknown_method",
            known=sorted(_REGISTRY),
        ) from None


def list_methods() -> list[MethodSpec]:
    """All methods in registration order (PEFT methods first, then LEGO and RMM)."""
    _ensure_loaded()
    return list(_REGISTRY.values())


def param_rows(spec: MethodSpec) -> list[dict[str, str]]:
    """One row per parameter: name, type, default, description (for `loradex methods`)."""
    rows = []
    for pname, f in spec.params.model_fields.items():
        default = "required" if f.default is PydanticUndefined else repr(f.default)
        rows.append(
            {
                "name": pname,
                "type": _type_name(f.annotation),
                "default": default,
                "description": f.description or "",
            }
        )
    return rows


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    args = typing.get_args(tp)
    if args:
        return " | ".join(_type_name(a) for a in args)
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def methods_table() -> str:
    """Markdown table for the README, generated from the registry (a docs test diffs it)."""
    lines = ["| Method | Name | Params | Reference |", "|---|---|---|---|"]
    for spec in list_methods():
        params = (
            "<br>".join(
                f"`{r['name']}`: {r['type']} = {r['default']}".replace("|", "\\|")
                for r in param_rows(spec)
                if r["name"] != "modules"
            )
            or "(none)"
        )
        lines.append(f"| `{spec.name}` | {spec.pretty_name} | {params} | {spec.reference} |")
    lines.append("")
    lines.append(
        "Every method also takes `modules`: 'strict' (default) | 'intersection' | 'union'."
    )
    return "\n".join(lines) + "\n"
