"""LoRA value objects: immutable, numpy-backed, free of I/O.

Convention (ALGORITHMS.md §0): ``delta = s * B @ A`` with ``A: (r, d_in)``, ``B: (d_out, r)``,
``s = alpha / r`` or ``alpha / sqrt(r)`` with rsLoRA. Factors are stored raw (unscaled) with
alpha, rank and the rsLoRA flag, exactly as PEFT stores them, so export is lossless.
Numpy (not torch) keeps the catalog/CLI path light; compute subsystems convert as they need.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from hub.core.errors import InvalidAdapterError


@dataclass(frozen=True)
class LoraModule:
    """One adapted linear layer. ``A``: (r, d_in), ``B``: (d_out, r)."""

    A: np.ndarray
    B: np.ndarray
    alpha: float
    use_rslora: bool = False

    def __post_init__(self) -> None:
        if self.A.ndim != 2 or self.B.ndim != 2:
            raise InvalidAdapterError(
                f"LoRA factors must be 2-D, got A{tuple(self.A.shape)} B{tuple(self.B.shape)}",
                code="lora_shape_mismatch",
            )
        if self.A.shape[0] != self.B.shape[1]:
            raise InvalidAdapterError(
                f"rank mismatch: A has {self.A.shape[0]} rows, B has {self.B.shape[1]} columns",
                code="lora_shape_mismatch",
            )
        if self.A.shape[0] == 0:
            raise InvalidAdapterError("LoRA rank must be >= 1", code="lora_rank_zero")

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.A.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.B.shape[0])

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    def delta(self, dtype: Any = np.float64) -> np.ndarray:
        """Dense update ``s * B @ A``: (d_out, r) @ (r, d_in). Materializes d_out x d_in; use
        only where a dense matrix is really wanted (tests, small models)."""
        return self.scaling * (self.B.astype(dtype) @ self.A.astype(dtype))

    def scale_folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Factors with the scale split evenly, ``(sqrt(s) B, sqrt(s) A)``: delta = B' @ A'."""
        root = math.sqrt(self.scaling)
        return root * self.B.astype(np.float32), root * self.A.astype(np.float32)

    @property
    def num_parameters(self) -> int:
        return int(self.A.size + self.B.size)


@dataclass(frozen=True)
class BaseModelRef:
    """Which base model an adapter belongs to. ``fingerprint`` is a weight hash when known."""

    model_id: str | None
    revision: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class LoraAdapter:
    """A base-model reference plus named modules (``model.layers.0.self_attn.q_proj`` ...).

    ``mergeable`` is False for adapters we record faithfully but must never merge as plain LoRA
    (DoRA, trained biases, ``modules_to_save``); ``extra_tensors`` keeps their non-LoRA tensors
    so export is exact.
    """

    base: BaseModelRef
    modules: Mapping[str, LoraModule]
    mergeable: bool = True
    not_mergeable_reason: str | None = None
    extra_tensors: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.modules:
            raise InvalidAdapterError("adapter has no LoRA modules", code="adapter_empty")
        object.__setattr__(self, "modules", MappingProxyType(dict(sorted(self.modules.items()))))
        object.__setattr__(self, "extra_tensors", MappingProxyType(dict(self.extra_tensors)))

    def __iter__(self) -> Iterator[tuple[str, LoraModule]]:
        return iter(self.modules.items())

    @property
    def ranks(self) -> dict[str, int]:
        return {name: m.rank for name, m in self.modules.items()}

    @property
    def target_modules(self) -> list[str]:
        """Leaf names targeted (``q_proj``, ``v_proj``), sorted."""
        return sorted({name.rsplit(".", 1)[-1] for name in self.modules})

    @property
    def num_parameters(self) -> int:
        return sum(m.num_parameters for m in self.modules.values())

    def shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) per module, what a base-model compatibility check needs."""
        return {n: (m.in_features, m.out_features) for n, m in self.modules.items()}
