"""RMM: reversible model merging of low-rank deltas (arXiv 2510.14163; ALGORITHMS.md §4).

Per module, every row of B (d_out positions) and every column of A (d_in positions) is a vector
in R^r per member. For one position, ``X = [x_1 ... x_n]`` (r x n) is centred by the member mean
``mu`` and its top-``p`` left singular vectors form the basis ``U_p`` (r x p); coefficients are
``C = U_p^T (X - mu)`` (p x n). Member i reverts as ``mu + U_p C[:, i]`` -- exact whenever
``p >= rank(X - mu)`` (guaranteed at ``p >= n - 1``), otherwise the Eckart-Young optimum.

Storage per position: ``p r + n p + r`` (``p r + n p`` uncentred) versus ``r n`` for the members.
Members of unequal rank are zero-padded to the largest rank; reverts trim the padding.
``gauge='svd'`` (default, *our addition*, §4.5) first re-expresses each member in its own SVD
gauge (``B = U S^1/2``, ``A = S^1/2 V^T``, canonical signs) so rank coordinates are comparable
across members; deltas are unchanged, only compression at small ``p`` improves.

The merged adapter returned with the artifact is the weighted concatenation of the reverted
members (``cat`` semantics on what the artifact can reproduce); the artifact is the product.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from hub.core.errors import BadInputError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from merging.batch import MergeContext, ModuleBatch
from merging.lowrank import rel_error, rerank_exact
from merging.registry import BatchOutput, MergeParams, MethodSpec, register, sum_of_ranks

REFERENCE = "RMM: Reversible Model Merging, arXiv:2510.14163 (closed form per position)"


class RmmParams(MergeParams):
    basis: int | None = Field(
        None, ge=0, description="basis size p per position; default min(r, n-1): exact"
    )
    centre: bool = Field(True, description="subtract the member mean before the SVD")
    gauge: Literal["svd", "raw"] = Field("svd", description="per-member SVD gauge first")


def _precheck(params: RmmParams, ranks: tuple[int, ...]) -> None:
    """Refuse an impossible basis before any tensor work."""
    basis_size(params, max(ranks), len(ranks))


def basis_size(params: RmmParams, r: int, n: int) -> int:
    limit = min(r, n)
    p = params.basis if params.basis is not None else min(r, n - 1 if params.centre else n)
    if p == 0 and not params.centre:
        # centred, basis 0 keeps the members' mean (every member reverts to it); uncentred it
        # keeps nothing: an all-zero merge that no member reverts from
        raise BadInputError(
            "RMM basis 0 without centring stores nothing: the merge and every reverted member "
            "would be all zeros; use basis >= 1, or centre=true to keep the members' mean",
            code="invalid_params",
        )
    if p > limit:
        raise BadInputError(
            f"RMM basis {p} exceeds min(rank {r}, members {n}) = {limit}; "
            f"{min(r, n - 1)} is already exact with centring",
            code="basis_too_large",
        )
    return p


def _artifact_size(params: RmmParams, d_out: int, d_in: int, ranks: tuple[int, ...]) -> int:
    r, n = max(ranks), len(ranks)
    return storage_params(d_out, d_in, r, n, basis_size(params, r, n), params.centre)


def storage_params(d_out: int, d_in: int, r: int, n: int, p: int, centre: bool = True) -> int:
    """Numbers stored for one module: (d_out + d_in) positions x (p r + n p [+ r])."""
    return (d_out + d_in) * (p * r + n * p + (r if centre else 0))


def _members(batch: ModuleBatch, gauge: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale-folded members, zero-padded to the largest rank: (m, n, d_out, r), (m, n, r, d_in)."""
    r = max(batch.ranks)
    Bs, As = [], []
    for b, a, s, ri in zip(
        batch.split(batch.B, 2),
        batch.split(batch.A, 1),
        batch.scaling.unbind(1),
        batch.ranks,
        strict=True,
    ):
        root = s.abs().sqrt()  # (m,); LoRA scales are positive
        b, a = b * root[:, None, None], a * root[:, None, None]
        if gauge == "svd":
            res = rerank_exact(b, a, ri)  # same delta, member-specific SVD gauge
            b, a = res.B, res.A
        Bs.append(torch.nn.functional.pad(b, (0, r - ri)))
        As.append(torch.nn.functional.pad(a, (0, 0, 0, r - ri)))
    return torch.stack(Bs, 1), torch.stack(As, 1)


def compress(X: torch.Tensor, p: int, centre: bool) -> dict[str, torch.Tensor]:
    """X: (m, P, r, n) position-wise member vectors -> mu (m, P, r; only when centring: an
    uncentred basis stores no mean, as the storage formula counts), basis (m, P, r, p),
    coef (m, P, p, n)."""
    mu = X.mean(dim=-1, keepdim=True) if centre else None
    Xc = X - mu if mu is not None else X
    U, _, _ = torch.linalg.svd(Xc, full_matrices=False)  # (m, P, r, min(r, n))
    Up = U[..., :p]
    parts = {"basis": Up, "coef": Up.mT @ Xc}  # (m, P, p, r) @ (m, P, r, n)
    return parts if mu is None else {"mu": mu[..., 0], **parts}


def reconstruct(
    mu: torch.Tensor | None, basis: torch.Tensor, coef: torch.Tensor, i: int
) -> torch.Tensor:
    """(..., P, r): member i at every position, ``mu + U_p C[:, i]``."""
    x = (basis @ coef[..., i : i + 1])[..., 0]  # (.., P, r, p) @ (.., P, p, 1)
    return x if mu is None else mu + x


def merge_rmm(batch: ModuleBatch, params: RmmParams, ctx: MergeContext) -> BatchOutput:
    n, r = batch.n, max(batch.ranks)
    p = basis_size(params, r, n)
    Bm, Am = _members(batch, params.gauge)  # (m, n, d_out, r), (m, n, r, d_in)
    sides = {
        "B": compress(Bm.permute(0, 2, 3, 1), p, params.centre),  # (m, d_out, r, n)
        "A": compress(Am.permute(0, 3, 2, 1), p, params.centre),
    }  # (m, d_in, r, n)
    artifact = {f"{s}_{k}": v for s, parts in sides.items() for k, v in parts.items()}
    Bs, As, errs = [], [], []
    for i, (w, ri) in enumerate(zip(batch.weights.tolist(), batch.ranks, strict=True)):
        b_hat = reconstruct(sides["B"].get("mu"), sides["B"]["basis"], sides["B"]["coef"], i)
        a_hat = reconstruct(sides["A"].get("mu"), sides["A"]["basis"], sides["A"]["coef"], i)
        b_hat, a_hat = b_hat[..., :ri], a_hat[..., :ri].mT  # (m, d_out, ri), (m, ri, d_in)
        errs.append(rel_error(Bm[:, i, :, :ri], Am[:, i, :ri], b_hat, a_hat))
        root = abs(w) ** 0.5
        Bs.append(b_hat * root)
        As.append(a_hat * (root if w >= 0 else -root))
    return BatchOutput(
        B=torch.cat(Bs, -1),
        A=torch.cat(As, -2),
        rel_error=torch.stack(errs, -1).amax(-1),
        artifact=artifact,
    )


RMM = register(
    MethodSpec(
        name="rmm",
        pretty_name="RMM (reversible merge)",
        reference=REFERENCE,
        params=RmmParams,
        fn=merge_rmm,
        artifact_kind="rmm",
        precheck=_precheck,
        description="per-position basis + per-member coefficients; revert any member",
        error_reference="members (max over members of the revert error)",
        output_rank=sum_of_ranks,  # the reverted members side by side
        artifact_size=_artifact_size,
    )
)


def _member_index(metadata: dict[str, Any], member: int | str) -> int:
    labels = list(metadata.get("members", []))
    if isinstance(member, str) and member in labels:
        return labels.index(member)
    if isinstance(member, int) and not isinstance(member, bool) and 0 <= member < len(labels):
        return member
    raise BadInputError(
        f"{member!r} is not a member of this RMM merge; members: {', '.join(labels)}",
        code="rmm_not_a_member",
        members=labels,
    )


def _field(tensors: dict[str, np.ndarray], name: str, field: str) -> torch.Tensor:
    try:
        # a copy: artifact arrays are read-only views of the blob, which torch warns about
        return torch.from_numpy(np.array(tensors[f"{name}::{field}"], dtype=np.float32))
    except KeyError:
        raise BadInputError(
            f"RMM artifact lacks {name}::{field}", code="rmm_artifact_invalid"
        ) from None


def _parts(
    tensors: dict[str, np.ndarray], name: str, side: str, centre: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    basis, coef = (_field(tensors, name, f"{side}_{f}") for f in ("basis", "coef"))
    # a centred basis needs its mean; an uncentred one stores none (artifacts written before
    # that change hold zeros there, read as they are)
    mu = _field(tensors, name, f"{side}_mu") if centre or f"{name}::{side}_mu" in tensors else None
    return mu, basis, coef


def revert_member(
    tensors: dict[str, np.ndarray], metadata: dict[str, Any], member: int | str
) -> LoraAdapter:
    """Reconstruct member ``member`` (index or label): scale folded, ``alpha = rank``."""
    idx = _member_index(metadata, member)
    centre = bool(metadata.get("params", {}).get("centre", True))  # the artifact's, once
    modules = {}
    for name, info in metadata["modules"].items():
        if idx not in info["members"]:  # absent from this module under modules='union'
            continue
        col = info["members"].index(idx)
        r_i = int(info["ranks"][col])
        b = reconstruct(*_parts(tensors, name, "B", centre), col)
        a = reconstruct(*_parts(tensors, name, "A", centre), col)
        modules[name] = LoraModule(
            A=a[:, :r_i].T.numpy().copy(), B=b[:, :r_i].numpy().copy(), alpha=float(r_i)
        )
    if not modules:
        raise BadInputError(
            "RMM artifact holds no module for this member", code="rmm_artifact_invalid"
        )
    return LoraAdapter(base=BaseModelRef(**metadata["base"]), modules=modules)
