"""Stacked factors of several modules of equal shape: the unit every method works on.

A ``ModuleBatch`` holds ``m`` modules that share ``(d_out, d_in)`` and the same per-member ranks,
with the members' factors concatenated along the rank axis (``R = sum r_i``). Batching lets the
QR / SVD / k-means kernels run once per shape group instead of once per module (GPU win; on CPU
it mostly saves Python overhead).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hub.core.lora import LoraAdapter
from merging.validation import AdapterShapes


@dataclass(frozen=True)
class MergeContext:
    """Per-merge settings a method may need: device, compute dtype and the seed."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    seed: int = 0
    # reusable work buffers for the lifetime of one merge (see ``scratch``)
    _scratch: dict[str, torch.Tensor] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def scratch(
        self, key: str, shape: tuple[int, ...], dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """An uninitialised ``shape`` tensor on ``device`` that reuses the storage of the last
        request under ``key`` (grown when too small). Fresh memory is expensive on CPU (page
        faults: ~1 s per GB here, several GB per 7B merge), so batch inputs and fp64 work
        arrays live in a few buffers per merge. The previous contents of ``key`` are
        invalidated: only for data that dies before the next request under the same key.
        """
        dtype = dtype or self.dtype
        n = int(np.prod(shape)) if shape else 1
        buf = self._scratch.get(key)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype, device=self.device)
            self._scratch[key] = buf
        return buf[:n].view(shape)

    def generator(self, module: str) -> torch.Generator:
        """A generator seeded from (seed, module name): results do not depend on batching."""
        digest = hashlib.sha256(f"{self.seed}:{module}".encode()).digest()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        return gen


@dataclass
class ModuleBatch:
    """``m`` modules x ``n`` present members. Factors are raw (unscaled), as PEFT stores them."""

    names: list[str]
    members: tuple[int, ...]  # indices into the merge's adapter list, in order
    ranks: tuple[int, ...]  # r_i of each present member (same for every module of the batch)
    A: torch.Tensor  # (m, R, d_in), members concatenated along R
    B: torch.Tensor  # (m, d_out, R)
    scaling: torch.Tensor  # (m, n): s_i of each member in each module
    weights: torch.Tensor  # (n,): w_i

    @property
    def n(self) -> int:
        return len(self.ranks)

    @property
    def total_rank(self) -> int:
        return int(sum(self.ranks))

    @property
    def coeffs(self) -> torch.Tensor:
        """(m, n): c_i = w_i * s_i, the factor PEFT folds into member i."""
        return self.weights[None, :] * self.scaling

    def unit_coeffs(self) -> torch.Tensor:
        """(m, R): c_i repeated for every rank unit of member i."""
        reps = torch.tensor(self.ranks, device=self.A.device)
        return torch.repeat_interleave(self.coeffs, reps, dim=1)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted, scale-folded factors: ``B' A' = sum_i c_i B_i A_i`` exactly.

        sqrt(|c|) goes on each side and the sign on A, so magnitudes stay balanced (§0.1.3).
        """
        c = self.unit_coeffs()  # (m, R)
        root = c.abs().sqrt()
        B = self.B * root[:, None, :]  # (m, d_out, R) * (m, 1, R)
        A = self.A * (root * torch.sign(c))[:, :, None]  # (m, R, d_in) * (m, R, 1)
        return B, A

    def member_slices(self) -> list[slice]:
        bounds = np.cumsum((0, *self.ranks))
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def split(self, tensor: torch.Tensor, dim: int) -> list[torch.Tensor]:
        """Split a rank-axis tensor into per-member pieces."""
        return list(torch.split(tensor, list(self.ranks), dim=dim))


def group_modules(
    adapters: Sequence[AdapterShapes], names: Sequence[str]
) -> dict[tuple, list[str]]:
    """Group module names by (d_out, d_in, present members, their ranks)."""
    groups: dict[tuple, list[str]] = {}
    for name in names:
        present = tuple(i for i, ad in enumerate(adapters) if name in ad.modules)
        ranks = tuple(adapters[i].modules[name].rank for i in present)
        mod = adapters[present[0]].modules[name]
        key = (mod.out_features, mod.in_features, present, ranks)
        groups.setdefault(key, []).append(name)
    return groups


def iter_batches(
    adapters: Sequence[LoraAdapter],
    weights: Sequence[float],
    names: Sequence[str],
    ctx: MergeContext,
    max_batch: int,
    *,
    reuse_buffers: bool = False,
) -> Iterator[ModuleBatch]:
    """Yield batches of at most ``max_batch`` modules, building device tensors lazily.

    ``reuse_buffers``: every CPU batch is built into the same ``ctx.scratch`` buffers, so a
    batch is only valid until the next one is requested."""
    for (_, _, present, ranks), group in group_modules(adapters, names).items():
        for start in range(0, len(group), max_batch):
            chunk = group[start : start + max_batch]
            yield build_batch(
                [adapters[i] for i in present],
                [weights[i] for i in present],
                chunk,
                ctx,
                members=present,
                ranks=ranks,
                reuse_buffers=reuse_buffers,
            )


_NP_DTYPES = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}


def build_batch(
    adapters: Sequence[LoraAdapter],
    weights: Sequence[float],
    names: Sequence[str],
    ctx: MergeContext,
    *,
    members: tuple[int, ...] | None = None,
    ranks: tuple[int, ...] | None = None,
    reuse_buffers: bool = False,
) -> ModuleBatch:
    """Stack ``names`` of ``adapters`` (all must have them) onto ``ctx.device``.

    ``reuse_buffers``: the stacked factors live in ``ctx.scratch`` buffers, valid until the
    next batch is built (the engine consumes each batch before building the next)."""
    ranks = ranks or tuple(ad.modules[names[0]].rank for ad in adapters)
    first = adapters[0].modules[names[0]]
    d_out, d_in, R = first.out_features, first.in_features, int(sum(ranks))
    # one copy (with the dtype cast) straight into the stacked layout: no per-module
    # concatenate + stack round trip, which dominated CPU merges of 7B shapes
    np_dtype = _NP_DTYPES.get(ctx.dtype, np.float32)  # bf16 etc.: cast on the torch side
    m = len(names)
    if reuse_buffers and ctx.device.type == "cpu" and np_dtype is _NP_DTYPES.get(ctx.dtype):
        A = ctx.scratch("batch_A", (m, R, d_in)).numpy()
        B = ctx.scratch("batch_B", (m, d_out, R)).numpy()
    else:
        A = np.empty((m, R, d_in), dtype=np_dtype)
        B = np.empty((m, d_out, R), dtype=np_dtype)
    for j, nm in enumerate(names):
        off = 0
        for ad in adapters:
            mod = ad.modules[nm]
            r = mod.rank
            A[j, off : off + r] = mod.A
            B[j, :, off : off + r] = mod.B
            off += r
    scaling = [[ad.modules[nm].scaling for ad in adapters] for nm in names]

    def dev(x: np.ndarray | list) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=ctx.dtype).to(ctx.device)

    return ModuleBatch(
        names=list(names),
        members=members if members is not None else tuple(range(len(adapters))),
        ranks=ranks,
        A=dev(A),
        B=dev(B),
        scaling=dev(scaling),
        weights=dev(list(weights)),
    )
