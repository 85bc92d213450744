"""PEFT's element-wise task-vector operators (``peft/utils/merge_utils.py``), batched.

Task tensors are stacked as ``T: (m, n, *shape)`` (m modules, n members) with weights
``W: (m, n)``; every operator returns ``(m, *shape)``. Semantics follow PEFT 0.21 exactly:
``density`` is the fraction *kept*; ``density >= 1`` skips pruning (and DARE's rescale);
TIES elects the sign on the unweighted pruned tensors and takes the disjoint mean of the
weighted ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from merging.batch import MergeContext

SignMethod = Literal["total", "frequency"]


def bernoulli_mask(
    shape: Sequence[int],
    density: float,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One DARE keep-mask. Module-level so parity tests can inject PEFT's masks."""
    probs = torch.full(tuple(shape), density, device=device, dtype=dtype)
    return torch.bernoulli(probs, generator=generator)


def dare_masks(
    names: Sequence[str], sides: Sequence[torch.Tensor], density: float, ctx: MergeContext
) -> list[torch.Tensor]:
    """Masks for each side tensor ``(m, n, ...)``, drawn module by module and, within a module,
    side by side then member by member (PEFT's order: all A's, then all B's), from a generator
    seeded by (seed, module name) so the masks do not depend on batching."""
    out = [torch.empty_like(s) for s in sides]
    for j, name in enumerate(names):
        gen = ctx.generator(name)
        for side, mask in zip(sides, out, strict=True):
            for i in range(side.shape[1]):
                mask[j, i] = bernoulli_mask(side.shape[2:], density, gen, side.device, side.dtype)
    return out


def magnitude_prune_each(T: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top ``int(density * numel)`` entries by |value| of every task tensor."""
    if density >= 1:
        return T
    flat = T.flatten(2)  # (m, n, N)
    k = int(density * flat.shape[-1])
    mask = torch.zeros_like(flat)
    if k > 0:
        mask.scatter_(-1, flat.abs().topk(k, dim=-1).indices, 1.0)
    return (flat * mask).view_as(T)


def random_prune_each(T: torch.Tensor, density: float, masks: torch.Tensor | None) -> torch.Tensor:
    """DARE: drop with probability 1 - density, rescale survivors by 1 / density."""
    if density >= 1 or masks is None:
        return T
    return T * masks / density


def _weighted(T: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return T * W.reshape(*W.shape, *([1] * (T.dim() - 2)))  # (m, n, ...) * (m, n, 1, ...)


def weighted_sum(T: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return _weighted(T, W).sum(dim=1)


def ties_merge(T: torch.Tensor, W: torch.Tensor, sign_method: SignMethod) -> torch.Tensor:
    """Sign election + disjoint mean on already-pruned task tensors ``T``."""
    sign = T.sign()
    magnitude = T.sum(dim=1) if sign_method == "total" else sign.sum(dim=1)  # (m, ...)
    majority = torch.where(magnitude >= 0, 1.0, -1.0).to(T.dtype)
    agree = (sign == majority[:, None]).to(T.dtype)  # (m, n, ...)
    mixed = (_weighted(T, W) * agree).sum(dim=1)
    return mixed / agree.sum(dim=1).clamp_min(1.0)


# Operators with one signature: (T, W, params, masks) -> merged. ``params`` has ``density`` and
# ``majority_sign_method`` where the operator needs them; ``masks`` only DARE uses.
Operator = Callable[[torch.Tensor, torch.Tensor, Any, torch.Tensor | None], torch.Tensor]


def op_linear(T: torch.Tensor, W: torch.Tensor, p: Any, masks: torch.Tensor | None) -> torch.Tensor:
    return weighted_sum(T, W)


def op_magnitude_prune(
    T: torch.Tensor, W: torch.Tensor, p: Any, masks: torch.Tensor | None
) -> torch.Tensor:
    return weighted_sum(magnitude_prune_each(T, p.density), W)


def op_ties(T: torch.Tensor, W: torch.Tensor, p: Any, masks: torch.Tensor | None) -> torch.Tensor:
    return ties_merge(magnitude_prune_each(T, p.density), W, p.majority_sign_method)


def op_dare_linear(
    T: torch.Tensor, W: torch.Tensor, p: Any, masks: torch.Tensor | None
) -> torch.Tensor:
    return weighted_sum(random_prune_each(T, p.density, masks), W)


def op_dare_ties(
    T: torch.Tensor, W: torch.Tensor, p: Any, masks: torch.Tensor | None
) -> torch.Tensor:
    return ties_merge(random_prune_each(T, p.density, masks), W, p.majority_sign_method)
