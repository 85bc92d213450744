"""PEFT's dense ``*_svd`` methods: ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune_svd.

These operate element-wise on full deltas ``s_i B_i A_i`` (PEFT
``_svd_generalized_task_arithmetic_weighted_adapter``), so they *must* materialize
``d_out x d_in`` per member: the engine runs them one module at a time. The merged dense delta
is then truncated by a full SVD to ``rank`` (default: the largest input rank). Plain ``svd``
does not need the dense path and lives in ``merging.methods.svd``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch

from merging.batch import MergeContext, ModuleBatch
from merging.lowrank import factors_from_svd
from merging.methods import peft_ops
from merging.methods.factorwise import DARE_REF, PEFT_REF, TIES_REF
from merging.methods.params import DenseSvdParams, DensityParams, SignParams
from merging.methods.svd import clamp_factors, default_rank
from merging.registry import BatchOutput, MethodSpec, register


class DenseDensityParams(DenseSvdParams, DensityParams):
    pass


class DenseSignParams(DenseSvdParams, SignParams):
    pass


def merge_dense(
    batch: ModuleBatch, params: Any, ctx: MergeContext, *, op: peft_ops.Operator, random: bool
) -> BatchOutput:
    k = default_rank(batch, params.rank)
    As, Bs = batch.split(batch.A, dim=1), batch.split(batch.B, dim=2)
    # (m, n, d_out, d_in): the dense member deltas s_i B_i A_i -- unavoidable for these methods.
    T = torch.stack([b @ a for b, a in zip(Bs, As, strict=True)], dim=1)
    T = T * batch.scaling[:, :, None, None]
    masks = None
    if random and params.density < 1:
        masks = peft_ops.dare_masks(batch.names, [T], params.density, ctx)[0]
    D = op(T, batch.weights.expand(len(batch.names), -1), params, masks)  # (m, d_out, d_in)
    del T, masks
    U, S, Vh = torch.linalg.svd(D, full_matrices=False)
    split: Literal["balanced", "peft"] = "peft" if params.clamp is not None else "balanced"
    B, A = factors_from_svd(U, S, Vh.mT, k, split)
    if params.clamp is not None:
        B, A = clamp_factors(B, A, params.clamp)
    s2 = S.double() ** 2
    err = (s2[:, k:].sum(-1) / s2.sum(-1).clamp_min(1e-300)).sqrt()
    return BatchOutput(B=B, A=A, rel_error=err)


def _spec(
    name: str, pretty: str, ref: str, params: type, op: peft_ops.Operator, random: bool = False
) -> MethodSpec:
    return register(
        MethodSpec(
            name=name,
            pretty_name=pretty,
            reference=ref,
            params=params,
            fn=partial(merge_dense, op=op, random=random),
            rank_limit="dims",
            dense=True,
            description=f"PEFT combination_type={name!r}: on dense deltas, then truncated SVD",
            error_reference="pre_truncation",
        )
    )


TIES_SVD = _spec(
    "ties_svd",
    "TIES + SVD (PEFT, dense)",
    f"{TIES_REF}; {PEFT_REF}",
    DenseSignParams,
    peft_ops.op_ties,
)
DARE_LINEAR_SVD = _spec(
    "dare_linear_svd",
    "DARE linear + SVD (PEFT, dense)",
    f"{DARE_REF}; {PEFT_REF}",
    DenseDensityParams,
    peft_ops.op_dare_linear,
    random=True,
)
DARE_TIES_SVD = _spec(
    "dare_ties_svd",
    "DARE TIES + SVD (PEFT, dense)",
    f"{DARE_REF}; {PEFT_REF}",
    DenseSignParams,
    peft_ops.op_dare_ties,
    random=True,
)
MAGNITUDE_PRUNE_SVD = _spec(
    "magnitude_prune_svd",
    "Magnitude prune + SVD (PEFT, dense)",
    PEFT_REF,
    DenseDensityParams,
    peft_ops.op_magnitude_prune,
)
