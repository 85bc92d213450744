"""Low-rank linear algebra that never forms a d_out x d_in matrix.

For ``dW = B A`` with ``B: (d_out, R)``, ``A: (R, d_in)``: thin QR of ``B`` and ``A^T`` gives
``dW = Q_b (R_b R_a^T) Q_a^T``, so the SVD of ``dW`` is the SVD of the small ``R x R`` core
rotated back (PERF-RELIABILITY §A2). Cost O((d_out + d_in) R^2), memory O((d_out + d_in) R).
All functions are batched over a leading module axis ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Split = Literal["balanced", "peft"]


@dataclass
class Rerank:
    B: torch.Tensor  # (m, d_out, k)
    A: torch.Tensor  # (m, k, d_in)
    S: torch.Tensor  # (m, p): all singular values of B A, descending (p = min(R, d_out, d_in))
    fallbacks: int = 0  # modules where the fast path failed its checks and ran exact

    def rel_error(self, k: int) -> torch.Tensor:
        """(m,): ||dW - dW_k||_F / ||dW||_F, exact from the spectrum (Eckart-Young)."""
        s2 = self.S.double() ** 2
        total = s2.sum(-1)
        tail = s2[:, k:].sum(-1)
        return torch.where(total > 0, (tail / total.clamp_min(1e-300)).sqrt(), 0.0)


def _canonical_signs(B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each rank unit so the largest-|.| entry of its A row is positive: deterministic
    across LAPACK/cuSOLVER versions and fast/exact paths; B A is unchanged."""
    idx = A.abs().argmax(dim=-1, keepdim=True)  # (m, k, 1)
    sign = torch.sign(torch.gather(A, -1, idx))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)  # (m, k, 1)
    return B * sign.mT, A * sign


def factors_from_svd(
    U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, k: int, split: Split
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) of rank k from singular triplets: ``B = U_k f(S)``, ``A = g(S) V_k^T``, f g = S.

    U: (m, d_out, >=kk), V: (m, d_in, >=kk). Zero units pad when fewer than k exist.
    """
    kk = min(k, S.shape[-1])
    s = S[:, :kk].to(U.dtype)
    fb, fa = (s.sqrt(), s.sqrt()) if split == "balanced" else (s, torch.ones_like(s))
    B = U[..., :kk] * fb[:, None, :]  # (m, d_out, k)
    A = (V[..., :kk] * fa[:, None, :]).mT  # (m, k, d_in)
    B, A = _canonical_signs(B, A)
    if kk < k:  # more rank requested than exists: pad with zero units so shapes are as promised
        B = torch.nn.functional.pad(B, (0, k - kk))
        A = torch.nn.functional.pad(A, (0, 0, 0, k - kk))
    return B, A


def _assemble(
    Lb: torch.Tensor,
    La: torch.Tensor,
    U: torch.Tensor,
    S: torch.Tensor,
    V: torch.Tensor,
    k: int,
    split: Split,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate core singular vectors back: Lb: (m, d_out, p1) @ U: (m, p1, k), same for A."""
    kk = min(k, S.shape[-1])
    return factors_from_svd(Lb @ U[..., :kk], S, La @ V[..., :kk], k, split)


def rerank_exact(B: torch.Tensor, A: torch.Tensor, k: int, split: Split = "balanced") -> Rerank:
    """Best rank-k approximation of ``B @ A`` via QR of both factors and an SVD of the core."""
    Qb, Rb = torch.linalg.qr(B)  # (m, d_out, p1), (m, p1, R)
    Qa, Ra = torch.linalg.qr(A.mT)  # (m, d_in, p2), (m, p2, R)
    core = Rb @ Ra.mT  # (m, p1, R) @ (m, R, p2) -> (m, p1, p2)
    U, S, Vh = torch.linalg.svd(core, full_matrices=False)
    Bo, Ao = _assemble(Qb, Qa, U, S, Vh.mT, k, split)
    return Rerank(Bo, Ao, S)


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
) -> Rerank:
    """Gram + Cholesky instead of QR (GEMM-bound), subspace iteration on the R x R core.

    Checked per module: the Ritz values must show a gap ``s_k / s_{k+1} >= min_gap`` and the
    relative residual ``||M v - s u|| / s_1`` must be below ``max_residual``; modules that fail
    (or whose Gram is singular) are recomputed with the exact path.
    """
    R = B.shape[-1]
    Gb = (B.mT @ B).double()  # (m, R, d_out) @ (m, d_out, R) -> (m, R, R)
    Ga = (A @ A.mT).double()  # (m, R, R)
    Lb, info_b = torch.linalg.cholesky_ex(Gb)  # Gb = Lb Lb^T, so B = Qb Lb^T
    La, info_a = torch.linalg.cholesky_ex(Ga)
    bad = (info_b != 0) | (info_a != 0)
    if k + oversample >= R:  # core too small for iteration to pay off: plain exact path
        return rerank_exact(B, A, k, split)
    if bool(bad.all()):  # singular Grams everywhere (e.g. duplicated inputs)
        res = rerank_exact(B, A, k, split)
        res.fallbacks = B.shape[0]
        return res
    core = Lb.mT @ La  # (m, R, R): same singular values as B A
    U, S, V = _subspace_svd(core, k + oversample, iters, generator)
    resid = (core @ V[..., :k] - U[..., :k] * S[:, None, :k]).norm(dim=-2).amax(-1)
    gap = S[:, k - 1] / S[:, k].clamp_min(1e-300)
    bad |= (gap < min_gap) | (resid > max_residual * S[:, :1].squeeze(-1).clamp_min(1e-300))
    # Lift back: Qb U = B Lb^{-T} U, computed as B @ solve(Lb^T, U): (d_out, R) @ (R, k).
    Wb = torch.linalg.solve_triangular(Lb.mT, U[..., :k], upper=True).to(B.dtype)
    Wa = torch.linalg.solve_triangular(La.mT, V[..., :k], upper=True).to(A.dtype)
    eye = torch.eye(k, dtype=B.dtype, device=B.device).expand(B.shape[0], k, k)
    Bo, Ao = _assemble(B @ Wb, A.mT @ Wa, eye, S[:, :k].to(B.dtype), eye, k, split)
    out = Rerank(Bo, Ao, _pad_spectrum(S, R).to(B.dtype), fallbacks=int(bad.sum()))
    if out.fallbacks:
        exact = rerank_exact(B[bad], A[bad], k, split)
        out.B[bad], out.A[bad] = exact.B, exact.A
        out.S = out.S.clone()
        out.S[bad] = _pad_spectrum(exact.S, out.S.shape[-1])
    return out


def _pad_spectrum(S: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(S, (0, max(0, width - S.shape[-1])))[:, :width]


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


def frob_inner(
    B1: torch.Tensor, A1: torch.Tensor, B2: torch.Tensor, A2: torch.Tensor
) -> torch.Tensor:
    """(m,): <B1 A1, B2 A2>_F = sum((B1^T B2) * (A1 A2^T)) in fp64, without forming either."""
    B1, A1, B2, A2 = (t.double() for t in (B1, A1, B2, A2))
    return ((B1.mT @ B2) * (A1 @ A2.mT)).sum(dim=(-2, -1))  # (m, k1, k2) * (m, k1, k2)


def rel_error(
    B_ref: torch.Tensor, A_ref: torch.Tensor, B: torch.Tensor, A: torch.Tensor
) -> torch.Tensor:
    """(m,): ||B A - B_ref A_ref||_F / ||B_ref A_ref||_F via Gram identities (fp64)."""
    ref2 = frob_inner(B_ref, A_ref, B_ref, A_ref)
    err2 = ref2 + frob_inner(B, A, B, A) - 2 * frob_inner(B_ref, A_ref, B, A)
    return torch.where(ref2 > 0, (err2.clamp_min(0) / ref2.clamp_min(1e-300)).sqrt(), 0.0)
