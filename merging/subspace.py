"""Fast approximate re-rank: subspace iteration on the R x R core, checked, with exact fallback.

Shares the Gram path of ``merging.lowrank`` (Grams, implicit QR, lift) and replaces only the core
SVD: block power iteration + Rayleigh-Ritz for the top ``k + oversample`` triplets. Every module
is certified (spectral gap ``s_k / s_(k+1)`` and residual) or recomputed exactly, so the result is
never worse than the checks allow; on a GPU the whole path is GEMMs.
"""

from __future__ import annotations

import torch

from merging.lowrank import Rerank, Scratch, Split, _CoreSvd, _pad_spectrum, rerank_gram


def rerank_fast(
    B: torch.Tensor,
    A: torch.Tensor,
    k: int,
    *,
    oversample: int = 8,
    iters: int = 6,
    min_gap: float = 1.02,
    max_residual: float = 1e-4,
    split: Split = "balanced",
    generator: torch.Generator | None = None,
    coeffs: torch.Tensor | None = None,
    scratch: Scratch | None = None,
) -> Rerank:
    """Gram path with subspace iteration on the R x R core instead of its full SVD.

    Checked per module: the Ritz values must show a gap ``s_k / s_{k+1} >= min_gap`` and the
    relative residual ``||M v - s u|| / s_1`` must be below ``max_residual``; modules that fail
    get the exact core SVD (the Grams are shared, so a fallback costs one R x R SVD), modules
    whose Gram is ill-conditioned get Householder QR. ``fallbacks`` counts both.
    """
    R = B.shape[-1]
    if k + oversample >= R:  # core too small for iteration to pay off: plain exact path
        return rerank_gram(B, A, k, split, coeffs, scratch=scratch)

    def solve(core: torch.Tensor) -> _CoreSvd:
        U, S, V = _subspace_svd(core, k + oversample, iters, generator)
        resid = (core @ V[..., :k] - U[..., :k] * S[:, None, :k]).norm(dim=-2).amax(-1)
        s1 = S[:, 0].clamp_min(1e-300)
        gap = S[:, k - 1] / S[:, k].clamp_min(1e-300)
        unsure = (gap < min_gap) | (resid > max_residual * s1) | (S[:, 0] <= 0)
        return _CoreSvd(U, _pad_spectrum(S, R), V, unsure)

    return rerank_gram(B, A, k, split, coeffs, core_solver=solve, scratch=scratch)


def _subspace_svd(
    M: torch.Tensor, width: int, iters: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``width`` singular triplets of each (R, R) ``M`` by block power iteration + Ritz."""
    m, R, _ = M.shape
    X = torch.randn(m, R, width, dtype=M.dtype, device=M.device, generator=generator)
    Q, _ = torch.linalg.qr(M @ X)  # (m, R, w)
    for _ in range(iters):
        P, _ = torch.linalg.qr(M.mT @ Q)
        Q, _ = torch.linalg.qr(M @ P)
    small = Q.mT @ M  # (m, w, R): Rayleigh-Ritz projection
    Us, S, Vh = torch.linalg.svd(small, full_matrices=False)  # (m, w, w), (m, w), (m, w, R)
    return Q @ Us, S, Vh.mT
