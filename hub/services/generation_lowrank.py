"""Realize per-module weights over experts as one LoRA of a chosen rank (SG-LoRA's output).

The generator speaks in weights ``w`` over its experts per module (the update
``sum_e w_e dW_e``); this stacks the experts' scale-folded factors with the weights as per-unit
coefficients and hands them to the merging engine's exact re-rank (QR/Gram of the tall factors
and an SVD of the R x R core; no d_out x d_in matrix), the same code path as an ``svd`` merge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule


def realize(
    weights: dict[str, np.ndarray], experts: Sequence[LoraAdapter], rank: int
) -> LoraAdapter:
    """The rank-``rank`` LoRA closest (Frobenius) to ``sum_e w_e dW_e`` in every module: the
    experts' scale-folded factors are stacked with the weights as per-unit coefficients and
    re-ranked by the merging engine's exact path (QR/Gram + SVD of an R x R core)."""
    import torch

    from merging.lowrank import rerank_exact

    by_shape: dict[tuple[int, int], list[str]] = {}
    for module in sorted(weights):
        owner = next(e for e in experts if module in e.modules)
        m = owner.modules[module]
        by_shape.setdefault((m.out_features, m.in_features), []).append(module)
    modules: dict[str, LoraModule] = {}
    for (d_out, d_in), names in by_shape.items():
        B, A, C = _stack(names, weights, experts, d_out, d_in)
        res = rerank_exact(
            torch.from_numpy(B), torch.from_numpy(A), rank, coeffs=torch.from_numpy(C)
        )
        for j, module in enumerate(names):
            modules[module] = LoraModule(
                A=res.A[j].numpy().astype(np.float32),
                B=res.B[j].numpy().astype(np.float32),
                alpha=float(rank),  # scaling 1: the factors carry the update
            )
    return LoraAdapter(base=BaseModelRef(experts[0].base.model_id), modules=modules)


def _stack(
    names: list[str],
    weights: dict[str, np.ndarray],
    experts: Sequence[LoraAdapter],
    d_out: int,
    d_in: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, d_out, R) B, (m, R, d_in) A, (m, R) coefficients; zero units pad short modules."""
    units = [sum(e.modules[n].rank for e in experts if n in e.modules) for n in names]
    R = max(units)
    B = np.zeros((len(names), d_out, R), np.float32)
    A = np.zeros((len(names), R, d_in), np.float32)
    C = np.zeros((len(names), R), np.float32)
    for j, name in enumerate(names):
        at = 0
        for e, w in zip(experts, weights[name], strict=True):
            module = e.modules.get(name)
            if module is None:
                continue
            b, a = module.scale_folded()  # dW_e = b @ a
            r = module.rank
            B[j, :, at : at + r], A[j, at : at + r, :], C[j, at : at + r] = b, a, w
            at += r
    return B, A, C
