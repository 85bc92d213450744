"""LoRA-LEGO (Zhao et al., ICLR 2025): rank-wise k-means over Minimal Semantic Units.

Each rank unit ``(b, a)`` of every input (weights and LoRA scales folded in, sqrt on each side)
is a point with feature ``[a/|a|; b/|b|]``; k-means groups them into ``rank`` clusters whose
raw-parameter means form the merged rank-k adapter (ALGORITHMS.md §3).

The clustering runs *exactly* in kernel form: ``|f_i - f_j|^2 = K_ii + K_jj - 2 K_ij`` with
``K = Ghat_a + Ghat_b`` (normalised R x R Grams), so Lloyd iterations never touch d-sized
vectors again (PERF §A2/§A5). Initialisation is deterministic farthest-point (start at the unit
with the largest ``|b||a|``), which makes the result independent of unit order.

Options and deviations (documented, all switchable):
- ``canonical_sign`` (default on, *our deviation*, §3.3): flip ``(b, a) -> (-b, -a)`` so the
  largest-|.| entry of ``a`` is positive before clustering; the paper/3rd-party code do not,
  which lets a unit and its negation (identical contribution) cancel inside a cluster.
- ``balance`` (default off, deviation): rescale each unit to ``|a| = |b|`` before averaging.
- ``param_reweight`` ("norm decay"): centroid scaled to the mean member norm; ``norm`` picks L2
  (default) or L-inf as in the third-party code.
- ``output_reweight`` ("variance expansion"): merged update times ``sqrt(r_mean / k)``, with
  ``r_mean`` the mean input rank (the paper's choice for unequal ranks is unverified).
- ``gauge='svd'`` (deviation, §0.1.1): units of a trained LoRA are an arbitrary GL(r) mix (PEFT
  inits A at random, so trained ``a`` rows stay near-random and ``b`` columns nearly collinear);
  re-expressing each member in its own SVD gauge makes units canonical and the merge invariant
  to ``(B M, M^-1 A)``.
- ``centroid='energy'`` / ``init='energy'`` (deviations): weight each unit by ``|b||a|`` in the
  centroid mean and when picking seeds, so tiny units in odd directions neither dilute a
  cluster's dominant unit nor claim a cluster of their own.
- ``centroid='rank1'`` (deviation): a cluster becomes the best rank-1 approximation of the
  *sum* of its units (QR trick, no d x d matrix) instead of a mean of factors: sum semantics,
  so k = total rank is ``cat``, units that cancel stay cancelled (a factor mean of ``(b, a)``
  and ``(-b, -a)`` is 0, a factor mean of ``(b, a)`` and ``(b, -a)`` is not), and the
  reweightings, which repair averaging, do not apply. k-means then weights units by energy as
  with ``centroid='energy'``.
- ``kernel='product'`` (deviation): cluster the unit updates ``b a^T`` themselves (cosine
  ``(a.a')(b.b')``), blind to the (b, a) sign ambiguity, so no canonicalisation is needed.
- ``calibrate='norm'`` (deviation): rescale the update to ``|sum_i w_i dW_i|_F``, so weights
  mean what they mean for every other method (LEGO's own scale is that of *one* adapter).
- ``calibrate='refit'`` (deviation): keep LEGO's k unit directions, but give each the
  least-squares coefficient against ``sum_i w_i dW_i`` (k x k normal equations from factors):
  the clusters choose *which* directions, the weighted sum *how much* of each.
Semantics: a *mean* of units, so n identical copies merge back to the original, not n times it;
at weights ``1/n`` it therefore averages twice (``calibrate='norm'`` undoes that).
Ablation on the zoo: ``benchmarks/merge_quality.py`` (README "Merging").
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from merging.batch import MergeContext, ModuleBatch
from merging.lowrank import frob_inner, gram_factor, rel_error, rerank_exact
from merging.methods.params import RankParams
from merging.registry import BatchOutput, MethodSpec, register

REFERENCE = "LoRA-LEGO, Zhao et al., ICLR 2025, arXiv:2409.16167"
EPS = 1e-12


class LegoParams(RankParams):
    iters: int = Field(20, ge=1, le=1000, description="max Lloyd iterations")
    canonical_sign: bool = Field(True, description="sign-canonicalise units (our deviation)")
    balance: bool = Field(False, description="rescale each unit to |a| = |b| before averaging")
    param_reweight: bool = Field(True, description="scale centroids to the mean member norm")
    output_reweight: bool = Field(True, description="scale the update by sqrt(r_mean / k)")
    norm: Literal["l2", "linf"] = Field("l2", description="norm used by param_reweight")
    gauge: Literal["raw", "svd"] = Field(
        "raw", description="units as stored, or each member in its own SVD gauge (deviation)"
    )
    centroid: Literal["mean", "energy", "rank1"] = Field(
        "mean",
        description="plain mean of members, weighted by unit energy |b||a|, or 'rank1': the "
        "best rank-1 approximation of the cluster's summed update (sum semantics; the "
        "reweightings do not apply)",
    )
    kernel: Literal["direction", "product"] = Field(
        "direction",
        description="k-means features: [a/|a|; b/|b|] (paper), or the unit update b a^T/|b||a| "
        "(sign- and rescaling-invariant)",
    )
    init: Literal["farthest", "energy"] = Field(
        "farthest", description="seeds: farthest point, or farthest weighted by unit energy"
    )
    calibrate: Literal["none", "norm", "refit"] = Field(
        "none",
        description="'norm': rescale the update to |sum_i w_i dW_i|_F; 'refit': each "
        "centroid unit's coefficient by least squares against sum_i w_i dW_i (deviations)",
    )

    @model_validator(mode="after")
    def _reweighting_needs_a_mean(self) -> LegoParams:
        # rank1 centroids are sums, not means: the reweightings repair averaging and are
        # skipped; a user who asked for one explicitly is told rather than ignored.
        asked = [f for f in ("param_reweight", "output_reweight") if f in self.model_fields_set]
        if self.centroid == "rank1" and any(getattr(self, f) for f in asked):
            raise ValueError(f"{' and '.join(asked)} does not apply to centroid=rank1 (a sum)")
        return self


def _svd_gauge(batch: ModuleBatch, B: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Re-express each member's units in its own SVD gauge (``b_j = sqrt(s_j) u_j``,
    ``a_j = sqrt(s_j) v_j``): same delta, but units become canonical (orthogonal, ordered by
    energy) instead of an arbitrary GL(r) mix of the trained factors (ALGORITHMS §0.1.1)."""
    Bs, As = [], []
    for b, a, r in zip(batch.split(B, 2), batch.split(A, 1), batch.ranks, strict=True):
        res = rerank_exact(b, a, r)  # (m, d_out, r), (m, r, d_in)
        Bs.append(res.B.to(B.dtype))
        As.append(res.A.to(A.dtype))
    return torch.cat(Bs, -1), torch.cat(As, -2)


def _prepare_units(batch: ModuleBatch, p: LegoParams) -> tuple[torch.Tensor, torch.Tensor]:
    B, A = batch.folded()  # (m, d_out, R), (m, R, d_in)
    if p.gauge == "svd":
        B, A = _svd_gauge(batch, B, A)
    if p.canonical_sign:
        idx = A.abs().argmax(dim=-1, keepdim=True)  # (m, R, 1)
        sign = torch.sign(torch.gather(A, -1, idx))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        B, A = B * sign.mT, A * sign
    if p.balance:
        t = (A.norm(dim=-1) / B.norm(dim=-2).clamp_min(EPS)).sqrt()  # (m, R)
        t = torch.where(t > 0, t, torch.ones_like(t))
        B, A = B * t[:, None, :], A / t[:, :, None]
    return B, A


def _kernel(
    B: torch.Tensor, A: torch.Tensor, kind: Literal["direction", "product"] = "direction"
) -> torch.Tensor:
    """(m, R, R): inner products of the features, ``[a/|a|; b/|b|]`` ("direction") or the
    normalised unit updates ``b a^T / |b||a|`` ("product": <b a^T, b' a'^T>_F = (a.a')(b.b'),
    a Schur product of Grams, so still a valid kernel; it is blind to (b, a) -> (-b, -a))."""
    na = A.norm(dim=-1).clamp_min(EPS)  # (m, R)
    nb = B.norm(dim=-2).clamp_min(EPS)
    Ga = (A @ A.mT) / (na[:, :, None] * na[:, None, :])  # (m, R, d_in) @ (m, d_in, R)
    Gb = (B.mT @ B) / (nb[:, :, None] * nb[:, None, :])
    return Ga * Gb if kind == "product" else Ga + Gb


def _farthest_init(
    K: torch.Tensor, start: torch.Tensor, k: int, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(m, k) unit indices: farthest-point traversal in feature space, from ``start``; with
    ``weight`` (m, R) the next seed maximises ``weight * distance^2`` (a deterministic
    k-means++), so low-energy outliers do not take a cluster of their own. Never picks a unit
    at distance 0 from a seed (duplicates) while a distinct one is left."""
    diag = torch.diagonal(K, dim1=-2, dim2=-1)  # (m, R)
    rows = torch.arange(K.shape[0], device=K.device)
    chosen = [start]
    nearest = diag + diag[rows, start][:, None] - 2 * K[rows, start]  # (m, R) sq. distances
    for _ in range(1, k):
        score = nearest if weight is None else nearest.clamp_min(0) * weight
        nxt = score.argmax(dim=-1)
        chosen.append(nxt)
        d = diag + diag[rows, nxt][:, None] - 2 * K[rows, nxt]
        nearest = torch.minimum(nearest, d)
    return torch.stack(chosen, dim=-1)


def _assign_matrix(
    labels: torch.Tensor, k: int, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(m, R, k) mean-assignment matrix: column c averages the units labelled c, weighted by
    ``weight`` (m, R) when given (a cluster whose members all weigh 0 averages uniformly)."""
    onehot = torch.nn.functional.one_hot(labels, k).to(torch.float64)
    if weight is not None:
        w = onehot * weight.to(torch.float64)[:, :, None]
        onehot = torch.where(w.sum(dim=1, keepdim=True) > 0, w, onehot)
    return onehot / onehot.sum(dim=1, keepdim=True).clamp_min(1e-300)


def kernel_kmeans(
    K: torch.Tensor, init: torch.Tensor, k: int, iters: int, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(m, R) labels. Distances to a cluster mean: K_ii - 2 (K M)_ic + (M^T K M)_cc."""
    m, R, _ = K.shape
    diag = torch.diagonal(K, dim1=-2, dim2=-1)
    rows = torch.arange(m, device=K.device)[:, None]
    d0 = (
        diag[:, :, None]
        + diag[rows, init][:, None, :]
        - 2 * torch.gather(K, 2, init[:, None, :].expand(m, R, k))
    )  # (m, R, k): distance to each seed unit
    labels = d0.argmin(dim=-1)
    for _ in range(iters):
        M = _assign_matrix(labels, k, weight)  # (m, R, k)
        KM = K @ M
        dist = diag[:, :, None] - 2 * KM + torch.diagonal(M.mT @ KM, dim1=-2, dim2=-1)[:, None]
        empty = M.sum(dim=1) == 0  # (m, k): keep empty clusters alive with their seed unit
        dist = torch.where(empty[:, None, :], d0, dist)
        new = dist.argmin(dim=-1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def _reweight(
    Bc: torch.Tensor, Ac: torch.Tensor, B: torch.Tensor, A: torch.Tensor, M: torch.Tensor, norm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each centroid [a_c; b_c] to the mean norm of its members' [a; b]."""
    if norm == "l2":
        unit = (A.norm(dim=-1) ** 2 + B.norm(dim=-2) ** 2).sqrt()  # (m, R)
        cen = (Ac.norm(dim=-1) ** 2 + Bc.norm(dim=-2) ** 2).sqrt()  # (m, k)
    else:
        unit = torch.maximum(A.abs().amax(dim=-1), B.abs().amax(dim=-2))
        cen = torch.maximum(Ac.abs().amax(dim=-1), Bc.abs().amax(dim=-2))
    target = (unit[:, None, :].double() @ M).squeeze(1)  # (m, 1, R) @ (m, R, k) -> (m, k)
    gamma = torch.where(cen > 0, target / cen.double().clamp_min(EPS), 1.0).to(Bc.dtype)
    return Bc * gamma[:, None, :], Ac * gamma[:, :, None]


def _rank1_centroids(
    B: torch.Tensor, A: torch.Tensor, labels: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, d_out, k), (m, k, d_in): column c is the best rank-1 approximation of the *sum* of
    cluster c's units, ``sum_{u in c} b_u a_u^T``. One implicit thin QR per side for all
    clusters (``B = Q_b T_b`` from the Gram, as in the svd re-rank), then the leading singular
    pair of each cluster's R x R core ``T_b D_c T_a^T`` (``D_c`` masks the cluster's units);
    never d_out x d_in. A singleton keeps its unit exactly, so k = R is ``cat``."""
    # ``ok`` is not consulted: only each cluster's leading pair is kept, which an
    # ill-conditioned trailing direction barely moves (fp32 vs fp64 runs agree to ~1e-7,
    # benchmarks/merge_speed.py --data shared), unlike a full re-rank to k directions.
    fb = gram_factor((B.mT @ B).double(), None)  # B = (B W_b) T_b
    fa = gram_factor((A @ A.mT).double(), None)  # A^T = (A^T W_a) T_a
    mask = torch.nn.functional.one_hot(labels, k).double().mT  # (m, k, R)
    core = (fb.T[:, None] * mask[:, :, None, :]) @ fa.T.mT[:, None]  # (m, k, R, R)
    U, S, Vh = torch.linalg.svd(core)
    root = S[..., 0].sqrt()  # (m, k): sqrt(sigma_1) on each side
    u = U[..., 0] * root[..., None]  # (m, k, R)
    v = Vh[..., 0, :] * root[..., None]
    Bc = B @ (fb.W @ u.mT).to(B.dtype)  # (m, d_out, R) @ (m, R, k)
    Ac = (fa.W @ v.mT).mT.to(A.dtype) @ A  # (m, k, R) @ (m, R, d_in)
    return Bc, Ac


def _mean_centroids(
    B: torch.Tensor,
    A: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    weight: torch.Tensor | None,
    params: LegoParams,
    r_mean: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's centroids: (weighted) means of the members' factors, then its two
    reweightings, which repair what averaging does to norms and output variance."""
    M = _assign_matrix(labels, k, weight)  # (m, R, k)
    Bc = B @ M.to(B.dtype)  # (m, d_out, R) @ (m, R, k)
    Ac = M.mT.to(A.dtype) @ A  # (m, k, R) @ (m, R, d_in)
    if params.param_reweight:
        Bc, Ac = _reweight(Bc, Ac, B, A, M, params.norm)
    if params.output_reweight:
        f = (r_mean / k) ** 0.25  # on each side: the product scales by sqrt(r_mean / k)
        Bc, Ac = Bc * f, Ac * f
    return Bc, Ac


def _refit_units(
    Bc: torch.Tensor, Ac: torch.Tensor, B_ref: torch.Tensor, A_ref: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k unit directions LEGO found, choose their coefficients c to minimise
    ``|sum_j c_j b_j a_j^T - B_ref A_ref|_F``: the k x k normal equations ``G c = h`` with
    ``G = (Bc^T Bc) o (Ac Ac^T)`` and ``h_j = b_j^T B_ref A_ref a_j``, all from factors (fp64,
    a relative ridge for coincident units). A negative coefficient flips ``b``."""
    Bd, Ad = Bc.double(), Ac.double()
    G = (Bd.mT @ Bd) * (Ad @ Ad.mT)  # (m, k, k)
    h = ((Bd.mT @ B_ref.double()) * (Ad @ A_ref.double().mT)).sum(-1)  # (m, k)
    ridge = 1e-10 * G.diagonal(dim1=-2, dim2=-1).amax(-1).clamp_min(EPS)  # (m,)
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    c = torch.linalg.solve(G + ridge[:, None, None] * eye, h.unsqueeze(-1)).squeeze(-1)
    root = c.abs().sqrt()  # split |c| evenly over both factors
    return (Bd * (c.sign() * root)[:, None, :]).to(Bc.dtype), (Ad * root[:, :, None]).to(Ac.dtype)


def merge_lego(batch: ModuleBatch, params: LegoParams, ctx: MergeContext) -> BatchOutput:
    k = params.rank if params.rank is not None else max(batch.ranks)
    B, A = _prepare_units(batch, params)
    # fp64: k-means decisions should not flip on fp32 noise
    K = _kernel(B, A, params.kernel).double()
    energy = A.norm(dim=-1) * B.norm(dim=-2)  # (m, R): |b a^T|_F of each unit
    start = energy.argmax(dim=-1)  # (m,)
    weight = energy if params.centroid in ("energy", "rank1") else None
    if k >= batch.total_rank:  # every unit its own cluster: identity assignment
        labels = torch.arange(batch.total_rank, device=B.device).expand(len(batch.names), -1)
    else:
        seed_weight = energy.double() if params.init == "energy" else None
        init = _farthest_init(K, start, k, seed_weight)
        labels = kernel_kmeans(K, init, k, params.iters, weight)
    if params.centroid == "rank1":
        Bc, Ac = _rank1_centroids(B, A, labels, k)
    else:
        Bc, Ac = _mean_centroids(B, A, labels, k, weight, params, sum(batch.ranks) / batch.n)
    B_ref, A_ref = batch.folded()
    if params.calibrate == "norm":  # same Frobenius norm as the weighted sum it stands for
        ratio = frob_inner(B_ref, A_ref, B_ref, A_ref) / frob_inner(Bc, Ac, Bc, Ac).clamp_min(EPS)
        f = ratio.clamp_min(0).pow(0.25).to(Bc.dtype)  # (m,), on each side
        Bc, Ac = Bc * f[:, None, None], Ac * f[:, None, None]
    elif params.calibrate == "refit":
        Bc, Ac = _refit_units(Bc, Ac, B_ref, A_ref)
    return BatchOutput(B=Bc, A=Ac, rel_error=rel_error(B_ref, A_ref, Bc, Ac))


LEGO = register(
    MethodSpec(
        name="lego",
        pretty_name="LoRA-LEGO (rank-wise clustering)",
        reference=REFERENCE,
        params=LegoParams,
        fn=merge_lego,
        rank_limit="total",
        allow_negative_weights=False,
        description="k-means over rank units; centroids form a rank-k adapter (mean semantics)",
        error_reference="weighted_sum",
    )
)
