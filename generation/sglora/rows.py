"""Expert statistics and the per-coordinate rows the CVAE reads (cvae.py).

- ``expert_variances``: the per-expert variance that stands in for the paper's M epoch snapshots
  (the zoo, like most public adapters, has only final checkpoints): isotropic noise at a
  relative level ``noise`` per module, ``sigma_e^2 = noise^2 * |mu_e,m|^2 / d_m`` on every
  coordinate of module m. The informative part of the condition's variance is the
  between-expert term of the law of total variance, which comes from the experts themselves.
- ``CoordinateLayout``: per flattened coordinate, its module index, its module's scale and its
  direction's log relative eigenvalue.
- ``condition_rows``: requests (an aggregate each) -> one row per (request, coordinate).
- ``training_pairs``: for every expert and each of its description paraphrases, the condition
  aggregated from the *other* experts (leave self out: with itself in the library the condition
  would be its own coordinates and the CVAE would learn the identity) and the expert as target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from generation.sglora.aggregate import Aggregate, aggregate, cosine
from generation.sglora.cvae import ConditionRows
from generation.sglora.space import ExpertSpace

EIGEN_FLOOR = 1e-12


def expert_variances(space: ExpertSpace, noise: float) -> np.ndarray:
    """(n, D): ``noise^2 * |mu_e,m|^2 / d_m`` on every coordinate of module m."""
    parts = []
    for basis in space.bases:
        per = (basis.coords**2).sum(1, keepdims=True) / max(basis.dim, 1)  # (n, 1)
        parts.append(np.repeat(noise**2 * per, basis.dim, axis=1))
    return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class CoordinateLayout:
    module: np.ndarray  # (D,) module index of each coordinate
    scale: np.ndarray  # (D,) RMS coordinate of its module over the experts
    log_eigen: np.ndarray  # (D,) log(lam_j / lam_max of its module) / 10, in [-1, 0] mostly

    @classmethod
    def of(cls, space: ExpertSpace) -> CoordinateLayout:
        module, scale, log_eigen = [], [], []
        for g, basis in enumerate(space.bases):
            lam = (basis.coords**2).sum(0)  # (d,) eigenvalues: columns are sqrt(lam) e_j
            rms = float(np.sqrt(lam.sum() / (basis.coords.shape[0] * max(basis.dim, 1))))
            module.append(np.full(basis.dim, g))
            scale.append(np.full(basis.dim, rms if rms > 0 else 1.0))
            top = max(float(lam.max()) if lam.size else 0.0, EIGEN_FLOOR)
            log_eigen.append(np.log(np.maximum(lam, EIGEN_FLOOR) / top) / 10.0)
        cat = np.concatenate
        return cls(cat(module).astype(np.int64), cat(scale), cat(log_eigen))


def condition_rows(layout: CoordinateLayout, aggregates: Sequence[Aggregate]) -> ConditionRows:
    """(len(aggregates) * D) rows: mu*, sigma*, log eigenvalue, top and weighted similarity."""
    blocks = []
    for agg in aggregates:
        top = np.full_like(layout.scale, agg.similarities[0])
        weighted = np.full_like(layout.scale, float(agg.weights @ agg.similarities))
        blocks.append(
            np.stack(
                [
                    agg.mean / layout.scale,
                    np.sqrt(agg.var) / layout.scale,
                    layout.log_eigen,
                    top,
                    weighted,
                ],
                axis=1,
            )
        )
    # torch.tensor copies into torch's own (aligned) memory: numpy buffers of varying alignment
    # can send BLAS down different kernels and change the last bits of the result
    features = torch.tensor(np.concatenate(blocks), dtype=torch.float32)
    module = torch.tensor(np.tile(layout.module, len(aggregates)), dtype=torch.int64)
    return ConditionRows(features, module)


def training_pairs(
    keys: np.ndarray,
    queries: Sequence[np.ndarray],
    means: np.ndarray,
    variances: np.ndarray,
    *,
    k: int,
    tau: float,
) -> tuple[list[int], list[Aggregate]]:
    """(target expert index, condition) per (expert, query paraphrase), leave self out."""
    n = len(keys)
    targets, conditions = [], []
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        for q in np.atleast_2d(queries[i]):
            agg = aggregate(
                cosine(q, keys[others]), means[others], variances[others], k=min(k, n - 1), tau=tau
            )
            # indices back into the full library (they index ``others`` here)
            conditions.append(
                Aggregate(others[agg.indices], agg.similarities, agg.weights, agg.mean, agg.var)
            )
            targets.append(i)
    return targets, conditions
