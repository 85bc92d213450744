"""``svd``: best rank-k approximation of ``sum_i w_i s_i B_i A_i`` without forming it.

PEFT materializes each ``d_out x d_in`` delta and runs a dense SVD; we take (implicit) thin QRs
of the stacked factors and an SVD of the ``R x R`` core (``merging.lowrank``): same result up to
fp rounding and the sign gauge of singular vectors, orders of magnitude faster. In fp32 the QRs
come from fp64 Gram matrices + ``eigh`` (Householder QR where a Gram is ill-conditioned); fp64
runs (references) use Householder QR throughout. ``algorithm='fast'`` shares the Grams and
replaces the core SVD by subspace iteration, checks the spectral gap / residual per module and
falls back to the exact core SVD where they fail (``fast_path_fallbacks`` also counts modules
sent to Householder QR).

Deviations from PEFT 0.21 (tested): factors are split ``(U sqrt(S), sqrt(S) V^T)`` instead of
``(U S, V^T)`` unless ``clamp`` is set (PEFT's clamp is defined on its split); with ``clamp``,
PEFT's quantile depends on the arbitrary signs of its LAPACK singular vectors, ours on the
canonical signs of ``merging.lowrank``, so clamped results agree only up to that gauge.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from merging.batch import MergeContext, ModuleBatch
from merging.lowrank import rerank_exact
from merging.methods.params import DenseSvdParams
from merging.registry import BatchOutput, MethodSpec, register
from merging.subspace import rerank_fast

REFERENCE = "PEFT add_weighted_adapter combination_type='svd'; low-rank QR core (PERF §A2)"


class SvdParams(DenseSvdParams):
    algorithm: Literal["exact", "fast"] = Field(
        "exact", description="exact QR + core SVD, or subspace iteration with exact fallback"
    )
    fast_iters: int = Field(6, ge=1, le=100, description="subspace iterations (fast mode)")
    min_gap: float = Field(1.02, ge=1.0, description="fast mode: required s_k / s_(k+1)")


def default_rank(batch: ModuleBatch, rank: int | None) -> int:
    return rank if rank is not None else max(batch.ranks)


def clamp_factors(B: torch.Tensor, A: torch.Tensor, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's svd_clamp: one quantile over the entries of both factors, symmetric clamp."""
    flat = torch.cat([B.flatten(1), A.flatten(1)], dim=1)  # (m, d_out k + k d_in)
    hi = torch.quantile(flat, q, dim=1)  # (m,)
    lo = -hi
    B = torch.maximum(torch.minimum(B, hi[:, None, None]), lo[:, None, None])
    A = torch.maximum(torch.minimum(A, hi[:, None, None]), lo[:, None, None])
    return B, A


def merge_svd(batch: ModuleBatch, params: SvdParams, ctx: MergeContext) -> BatchOutput:
    k = default_rank(batch, params.rank)
    # raw stacked factors + per-unit coefficients: B diag(c) A = sum_i c_i B_i A_i (the Gram
    # path folds c into R x R matrices, so no scaled copy of the tall factors is made)
    B, A, c = batch.B, batch.A, batch.unit_coeffs()  # (m, d_out, R), (m, R, d_in), (m, R)
    split: Literal["balanced", "peft"] = "peft" if params.clamp is not None else "balanced"
    if params.algorithm == "fast":
        res = rerank_fast(
            B,
            A,
            k,
            iters=params.fast_iters,
            min_gap=params.min_gap,
            split=split,
            generator=ctx.generator(batch.names[0]),
            coeffs=c,
            scratch=ctx.scratch,
        )
    else:
        res = rerank_exact(B, A, k, split=split, coeffs=c, scratch=ctx.scratch)
    Bo, Ao = res.B, res.A
    if params.clamp is not None:
        Bo, Ao = clamp_factors(Bo, Ao, params.clamp)
    return BatchOutput(B=Bo, A=Ao, rel_error=res.rel_error(k), fallbacks=res.fallbacks)


SVD = register(
    MethodSpec(
        name="svd",
        pretty_name="SVD re-rank (low-rank, exact)",
        reference=REFERENCE,
        params=SvdParams,
        fn=merge_svd,
        rank_limit="total",
        description="truncated SVD of the weighted sum, computed in factor space",
        error_reference="weighted_sum",
    )
)
