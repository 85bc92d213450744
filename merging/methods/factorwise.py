"""PEFT's factor-wise methods: linear, ties, dare_linear, dare_ties, magnitude_prune.

Exactly ``LoraModel._generalized_task_arithmetic_weighted_adapter`` (PEFT 0.21): with
``c_i = w_i s_i`` the A stack is combined with weights ``sign(c_i) sqrt|c_i|`` and the B stack
with ``sqrt|c_i|``, each side on its own. The result is *not* ``sum_i c_i B_i A_i`` (cross terms
``B_i A_j``, PEFT issue #3004); the report's reconstruction error measures that gap. Kept for
parity with what PEFT users expect; prefer ``cat``, ``svd`` or ``lego``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from merging.batch import MergeContext, ModuleBatch
from merging.lowrank import rel_error
from merging.methods import peft_ops
from merging.methods.params import DensityParams, SignParams
from merging.registry import BatchOutput, MergeParams, MethodSpec, register

PEFT_REF = "PEFT LoraModel.add_weighted_adapter (huggingface/peft, tuners/lora/model.py)"
TIES_REF = "TIES-Merging, Yadav et al., NeurIPS 2023, arXiv:2306.01708"
DARE_REF = "DARE, Yu et al., ICML 2024, arXiv:2311.03099"


def merge_factorwise(
    batch: ModuleBatch, params: Any, ctx: MergeContext, *, op: peft_ops.Operator, random: bool
) -> BatchOutput:
    m, n, r = len(batch.names), batch.n, batch.ranks[0]
    c = batch.coeffs  # (m, n)
    w_b = c.abs().sqrt()
    w_a = w_b * torch.where(c >= 0, 1.0, -1.0).to(c.dtype)  # PEFT: sign on the A side only
    T_a = batch.A.reshape(m, n, r, -1)  # (m, R, d_in) -> (m, n, r, d_in)
    T_b = batch.B.reshape(m, -1, n, r).permute(0, 2, 1, 3)  # (m, d_out, R) -> (m, n, d_out, r)
    masks: list[torch.Tensor | None] = [None, None]
    if random and params.density < 1:
        masks = list(peft_ops.dare_masks(batch.names, [T_a, T_b], params.density, ctx))
    A = op(T_a, w_a, params, masks[0])  # (m, r, d_in)
    B = op(T_b, w_b, params, masks[1])  # (m, d_out, r)
    B_ref, A_ref = batch.folded()
    return BatchOutput(B=B, A=A, rel_error=rel_error(B_ref, A_ref, B, A))


def _spec(
    name: str,
    pretty: str,
    ref: str,
    params: type[MergeParams],
    op: peft_ops.Operator,
    random: bool = False,
) -> MethodSpec:
    return register(
        MethodSpec(
            name=name,
            pretty_name=pretty,
            reference=ref,
            params=params,
            fn=partial(merge_factorwise, op=op, random=random),
            description=f"PEFT combination_type={name!r}: applied to A and B separately",
            equal_ranks=True,
            error_reference="weighted_sum",
        )
    )


LINEAR = _spec("linear", "Linear (PEFT, factor-wise)", PEFT_REF, MergeParams, peft_ops.op_linear)
TIES = _spec(
    "ties", "TIES (PEFT, factor-wise)", f"{TIES_REF}; {PEFT_REF}", SignParams, peft_ops.op_ties
)
DARE_LINEAR = _spec(
    "dare_linear",
    "DARE linear (PEFT, factor-wise)",
    f"{DARE_REF}; {PEFT_REF}",
    DensityParams,
    peft_ops.op_dare_linear,
    random=True,
)
DARE_TIES = _spec(
    "dare_ties",
    "DARE TIES (PEFT, factor-wise)",
    f"{DARE_REF}; {PEFT_REF}",
    SignParams,
    peft_ops.op_dare_ties,
    random=True,
)
MAGNITUDE_PRUNE = _spec(
    "magnitude_prune",
    "Magnitude prune (PEFT, factor-wise)",
    PEFT_REF,
    DensityParams,
    peft_ops.op_magnitude_prune,
)
