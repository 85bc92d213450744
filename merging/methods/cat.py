"""``cat``: concatenate the weighted, scale-folded factors; exact, rank = sum of ranks.

``[B_1 ... B_n] [c_1 A_1; ...; c_n A_n] = sum_i c_i B_i A_i`` (ALGORITHMS §0.1.2). PEFT puts
``c_i`` wholly on A; we split ``sqrt|c_i|`` onto both sides (same delta, balanced factors).
"""

from __future__ import annotations

from merging.batch import MergeContext, ModuleBatch
from merging.registry import BatchOutput, MergeParams, MethodSpec, register, sum_of_ranks

REFERENCE = "PEFT add_weighted_adapter combination_type='cat' (huggingface/peft PR #817)"


def merge_cat(batch: ModuleBatch, params: MergeParams, ctx: MergeContext) -> BatchOutput:
    B, A = batch.folded()  # (m, d_out, R), (m, R, d_in)
    zero = B.new_zeros(len(batch.names), dtype=B.dtype)
    return BatchOutput(B=B, A=A, rel_error=zero)  # exact by construction


CAT = register(
    MethodSpec(
        name="cat",
        pretty_name="Concatenation (exact)",
        reference=REFERENCE,
        params=MergeParams,
        fn=merge_cat,
        description="exact weighted sum; output rank is the sum of input ranks",
        error_reference="weighted_sum",
        output_rank=sum_of_ranks,
    )
)
