"""A gauge-invariant coordinate space for the experts' updates, one per adapted module.

Factors of independently trained LoRAs cannot be averaged (ALGORITHMS.md §0.1: ``(B M, M^-1 A)``
is the same update for any invertible M, and ranks differ), so SG-LoRA's "flattened LoRA" is
replaced by coordinates of each module's *update* ``dW = s B A``:

- Per module, the Gram matrix of the n experts' updates ``G_ij = <dW_i, dW_j>_F`` comes from the
  stacked factors without forming any d_out x d_in matrix:
  ``<B_i A_i, B_j A_j> = sum((B_i^T B_j) * (A_i A_j^T))``, i.e. ``G = S^T (B^T B * A A^T) S`` with
  ``S`` the (R, n) indicator of which rank unit belongs to which expert (R = sum of ranks).
- ``G = E diag(lam) E^T`` (descending, signs fixed so each eigenvector's largest entry is
  positive). Expert i's coordinates are ``y_i = diag(sqrt(lam)) E^T e_i``: an orthonormal basis
  of the span of the updates, so ``|y_i - y_j| = |dW_i - dW_j|_F`` exactly (kernel PCA,
  uncentred). Directions with ``lam <= rel_tol * lam_max`` are dropped, at most ``max_dim`` kept.
- Any coordinate vector ``y`` is the update ``sum_i w_i dW_i`` with ``w = E diag(lam^-1/2) y``
  (``lift``): generated coordinates become per-expert weights, realized as a LoRA by a rank-k
  re-rank of the stacked factors (``hub.services`` hands that to ``merging``'s exact engine).

A module missing from an expert is a zero update. The flattened representation of an expert
is the concatenation of its module coordinates in ``FlatLayout`` order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hub.core.lora import LoraAdapter


@dataclass(frozen=True)
class FlatLayout:
    """Named arrays <-> one flat vector, in a fixed order; the round trip is bit-exact."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> FlatLayout:
        names = tuple(sorted(arrays))
        return cls(names, tuple(tuple(int(d) for d in arrays[n].shape) for n in names))

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s, dtype=np.int64)) for s in self.shapes]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes, strict=True):
            out[name] = slice(start, start + size)
            start += size
        return out

    def flatten(self, arrays: Mapping[str, np.ndarray], dtype: type = np.float64) -> np.ndarray:
        parts: list[np.ndarray] = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            a = np.asarray(arrays[name])
            if a.shape != shape:
                raise ValueError(f"{name}: shape {a.shape} is not the layout's {shape}")
            parts.append(a.reshape(-1).astype(dtype, copy=False))
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    def unflatten(self, flat: np.ndarray, dtype: type | None = None) -> dict[str, np.ndarray]:
        flat = np.asarray(flat)
        if flat.shape != (self.size,):
            raise ValueError(f"flat vector of shape {flat.shape}, layout needs ({self.size},)")
        out = {}
        for (name, sl), shape in zip(self.slices().items(), self.shapes, strict=True):
            part = flat[sl].reshape(shape)
            out[name] = part.astype(dtype) if dtype is not None else part.copy()
        return out


def folded_factors(adapter: LoraAdapter, module: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(B', A') with the scale folded in, ``dW = B' @ A'``, float64; None when absent."""
    m = adapter.modules.get(module)
    if m is None:
        return None
    b, a = m.scale_folded()
    return b.astype(np.float64), a.astype(np.float64)


def module_gram(factors: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> np.ndarray:
    """(n, n) Frobenius inner products of the experts' updates of one module."""
    n = len(factors)
    present = [(i, f) for i, f in enumerate(factors) if f is not None]
    gram = np.zeros((n, n))
    if not present:
        return gram
    B = np.concatenate([f[0] for _, f in present], axis=1)  # (d_out, R)
    A = np.concatenate([f[1] for _, f in present], axis=0)  # (R, d_in)
    owner = np.concatenate([np.full(f[0].shape[1], i) for i, f in present])  # (R,)
    S = np.zeros((B.shape[1], n))
    S[np.arange(B.shape[1]), owner] = 1.0  # (R, n)
    H = (B.T @ B) * (A @ A.T)  # (R, R): <b_u, b_v> <a_u, a_v>
    gram = S.T @ H @ S  # (n, n)
    return (gram + gram.T) / 2


@dataclass(frozen=True)
class ModuleBasis:
    """One module's coordinate system: ``coords`` (n, d) and ``lift`` (n, d), w = lift @ y."""

    coords: np.ndarray
    lift: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.coords.shape[1])


def basis_from_gram(gram: np.ndarray, *, max_dim: int, rel_tol: float = 1e-9) -> ModuleBasis:
    lam, vec = np.linalg.eigh(gram)  # ascending
    lam, vec = lam[::-1], vec[:, ::-1]
    keep = lam > rel_tol * max(float(lam[0]), 1e-300) if len(lam) else lam > 0
    keep[max_dim:] = False
    lam, vec = lam[keep], vec[:, keep]
    big = np.abs(vec).argmax(axis=0)
    vec = vec * np.where(vec[big, np.arange(vec.shape[1])] < 0, -1.0, 1.0)  # deterministic signs
    root = np.sqrt(lam)
    n = gram.shape[0]
    if root.size == 0:  # every expert is zero on this module
        return ModuleBasis(np.zeros((n, 0)), np.zeros((n, 0)))
    # C order, like a loaded artifact: reductions then round identically in both
    return ModuleBasis(
        coords=np.ascontiguousarray(vec * root), lift=np.ascontiguousarray(vec / root)
    )


@dataclass(frozen=True)
class ExpertSpace:
    """Coordinates of n experts in every module's gauge-invariant basis."""

    modules: tuple[str, ...]
    bases: tuple[ModuleBasis, ...]

    @classmethod
    def fit(cls, experts: Sequence[LoraAdapter], *, max_dim: int = 64) -> ExpertSpace:
        names = sorted({name for e in experts for name in e.modules})
        bases = []
        for name in names:
            gram = module_gram([folded_factors(e, name) for e in experts])
            bases.append(basis_from_gram(gram, max_dim=max_dim))
        return cls(tuple(names), tuple(bases))

    @property
    def layout(self) -> FlatLayout:
        return FlatLayout(self.modules, tuple((b.dim,) for b in self.bases))

    def expert_vectors(self) -> np.ndarray:
        """(n, D): each expert's flattened coordinates (SG-LoRA's X_n, gauge-free)."""
        return np.concatenate([b.coords for b in self.bases], axis=1)

    def expert_weights(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Per module, the (n,) weights over experts whose update has coordinates ``flat``."""
        parts = self.layout.unflatten(np.asarray(flat, np.float64))
        return {
            # elementwise product + sum, not BLAS: bit-identical across processes and alignments
            name: (b.lift * parts[name][None, :]).sum(axis=1)
            for name, b in zip(self.modules, self.bases, strict=True)
        }
