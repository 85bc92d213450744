"""Synthetic adapters of real model shapes, for tests and benchmarks (no files, no downloads)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule

LLAMA_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def llama_shapes(
    hidden: int, intermediate: int, kv_hidden: int | None = None
) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of the seven linear leaves of a Llama block."""
    kv = kv_hidden or hidden
    return {
        "q_proj": (hidden, hidden),
        "k_proj": (kv, hidden),
        "v_proj": (kv, hidden),
        "o_proj": (hidden, hidden),
        "gate_proj": (intermediate, hidden),
        "up_proj": (intermediate, hidden),
        "down_proj": (hidden, intermediate),
    }


def module_name(layer: int, leaf: str) -> str:
    block = "mlp" if leaf in ("gate_proj", "up_proj", "down_proj") else "self_attn"
    return f"model.layers.{layer}.{block}.{leaf}"


def random_adapter(
    shapes: dict[str, tuple[int, int]],
    *,
    layers: int,
    rank: int,
    seed: int,
    alpha: float | None = None,
    leaves: Sequence[str] | None = None,
    base: str = "synthetic-llama",
    decay: float = 0.0,
) -> LoraAdapter:
    """Gaussian factors scaled like trained LoRAs (|dW| ~ 1 per module); ``decay`` > 0 gives
    unit j a magnitude ``exp(-decay j)`` so spectra have gaps."""
    rng = np.random.default_rng(seed)
    alpha = float(alpha if alpha is not None else 2 * rank)
    mods = {}
    # per-adapter offset: spectra of different adapters interleave instead of stacking into ties
    profile = np.exp(-decay * np.arange(rank) - decay * rank * rng.uniform()).astype(np.float32)
    for layer in range(layers):
        for leaf in leaves or shapes:
            d_out, d_in = shapes[leaf]
            A = rng.standard_normal((rank, d_in), dtype=np.float32) / np.sqrt(d_in)
            B = rng.standard_normal((d_out, rank), dtype=np.float32) * (profile / np.sqrt(rank))
            mods[module_name(layer, leaf)] = LoraModule(A=A, B=B, alpha=alpha)
    return LoraAdapter(base=BaseModelRef(model_id=base), modules=mods)
