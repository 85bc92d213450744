"""Params models shared by several methods (each method's own model subclasses these)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from merging.registry import MergeParams


class DensityParams(MergeParams):
    density: float = Field(
        ..., gt=0, le=1, description="fraction of entries kept (PEFT semantics); 1 = no pruning"
    )


class SignParams(DensityParams):
    majority_sign_method: Literal["total", "frequency"] = Field(
        "total", description="TIES sign election: sum of values or count of signs"
    )


class RankParams(MergeParams):
    rank: int | None = Field(
        None, ge=1, description="output rank; default = largest input rank (PEFT svd_rank)"
    )


class DenseSvdParams(RankParams):
    clamp: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="PEFT svd_clamp: clamp factor entries at this quantile (PEFT factor split)",
    )
