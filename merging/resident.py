"""Device-resident merges: stack the inputs on the device once, then merge them many times.

``merge`` reads numpy factors and, for every call, stacks each batch on the host and copies it
to the device. For ten rank-16 adapters of a 7B shape that is 1.6 GB each way per merge: on a
GPU the copies cost more than the merge itself, and they are not what PEFT's
``add_weighted_adapter`` pays either (its factors already live in the model on the GPU). A
process that keeps adapters on the device (a server answering many merge or weight-sweep
requests over the same inputs) stages them once:

    staged = stage(adapters, device="cuda", names=["a", "b", "c"])
    out = merge_staged(staged, [0.5, 0.3, 0.2], "svd", {"rank": 16})
    out.modules["...q_proj"]  # (B, A) on the device; out.to_adapter() copies to the host

Every rule of ``merge`` applies (the same checks, codes and method code, module by module in
the same batches), so ``merge_staged(...).to_adapter()`` equals ``merge(...).adapter`` on the
same device. Staging keeps raw factors: weights and LoRA scales are applied per merge.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hub.core.errors import HubError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from merging.batch import MergeContext, ModuleBatch, build_batch, group_modules
from merging.engine import (
    Progress,
    build_report,
    finite_flag,
    resolve_device,
    run_method,
)
from merging.memory import PeakMemory
from merging.planning import check_request
from merging.registry import get_method
from merging.validation import Shapes, align_modules, check_adapters


@dataclass(frozen=True)
class _Shape:
    """What the module and rank rules read (``ModuleShape``), kept without the weights."""

    rank: int
    out_features: int
    in_features: int


@dataclass(frozen=True)
class _Group:
    """Modules of one shape and member set, stacked: ``A`` (m, R, d_in), ``B`` (m, d_out, R)."""

    names: list[str]
    members: tuple[int, ...]
    ranks: tuple[int, ...]
    A: torch.Tensor
    B: torch.Tensor
    scaling: torch.Tensor  # (m, n_present)


@dataclass(frozen=True)
class StagedAdapters:
    labels: list[str]
    base: BaseModelRef
    shapes: list[Shapes]
    groups: list[_Group]
    device: torch.device
    dtype: torch.dtype
    staging_seconds: float

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for g in self.groups for t in (g.A, g.B))


@dataclass(frozen=True)
class StagedResult:
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (B, A) on the device
    report: dict[str, Any]
    artifact: dict[str, torch.Tensor]  # "{module}::{field}" (RMM), on the device
    base: BaseModelRef

    def to_adapter(self) -> LoraAdapter:
        """The merged adapter on the host, in ``merge``'s output convention (alpha = rank)."""
        mods = {}
        for name, (B, A) in self.modules.items():
            a, b = A.cpu().numpy().copy(), B.cpu().numpy().copy()
            mods[name] = LoraModule(A=a, B=b, alpha=float(a.shape[0]))
        return LoraAdapter(base=self.base, modules=mods)


def stage(
    adapters: Sequence[LoraAdapter],
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype = torch.float32,
    names: Sequence[str] | None = None,
) -> StagedAdapters:
    """Check ``adapters`` as ``merge`` does and stack every module's raw factors on ``device``
    (all modules any of them adapts; a merge's module policy picks among them later)."""
    labels = list(names) if names is not None else [f"#{i}" for i in range(len(adapters))]
    check_adapters(adapters, labels)
    modules = align_modules(adapters, labels, "union")  # shapes agree wherever present
    dev = resolve_device(device)
    ctx = MergeContext(device=dev, dtype=dtype)
    t0 = time.perf_counter()
    groups = []
    for (_, _, present, ranks), group in group_modules(adapters, modules).items():
        batch = build_batch(
            [adapters[i] for i in present],
            [1.0] * len(present),
            group,
            ctx,
            members=present,
            ranks=ranks,
        )
        groups.append(_Group(group, present, ranks, batch.A, batch.B, batch.scaling))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    shapes = [
        Shapes({n: _Shape(m.rank, m.out_features, m.in_features) for n, m in ad.modules.items()})
        for ad in adapters
    ]
    return StagedAdapters(
        labels, adapters[0].base, shapes, groups, dev, dtype, time.perf_counter() - t0
    )


def merge_staged(
    staged: StagedAdapters,
    weights: Sequence[float],
    method: str,
    params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    max_batch: int = 32,
) -> StagedResult:
    """``merge`` over staged inputs: no host stacking, no host <-> device copy; the result
    stays on the device. Same checks and codes as ``merge``, before any tensor work."""
    spec = get_method(method)
    p = spec.parse_params(params)
    selected = set(check_request(spec, p, staged.shapes, weights, staged.labels))
    ctx = MergeContext(device=staged.device, dtype=staged.dtype, seed=seed)
    step = 1 if spec.dense else max_batch
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    errors: list[tuple[list[str], torch.Tensor]] = []
    artifact: dict[str, torch.Tensor] = {}
    finite: list[torch.Tensor] = []
    fallbacks = done = 0
    t0 = time.perf_counter()
    with torch.inference_mode(), PeakMemory(ctx.device) as mem:
        for g in staged.groups:
            rows = [i for i, name in enumerate(g.names) if name in selected]
            w = torch.tensor([float(weights[i]) for i in g.members], dtype=ctx.dtype)
            w = w.to(ctx.device)
            for start in range(0, len(rows), step):
                batch = _batch(g, rows[start : start + step], w)
                res = run_method(spec, batch, p, ctx)
                finite.append(finite_flag(res.B, res.A))
                if res.rel_error is not None:
                    errors.append((batch.names, res.rel_error))
                for j, name in enumerate(batch.names):
                    modules[name] = (res.B[j], res.A[j])
                    for field, t in (res.artifact or {}).items():
                        artifact[f"{name}::{field}"] = t[j]
                fallbacks += res.fallbacks
                done += len(batch.names)
                if progress is not None:
                    progress(done, len(selected))
        all_finite = bool(torch.stack(finite).all())  # one device sync, not one per batch
    seconds = time.perf_counter() - t0
    if not all_finite:
        raise HubError("merged factors are not finite", code="merge_not_finite")
    ranks = {name: int(A.shape[0]) for name, (_, A) in modules.items()}
    errs = {
        name: float(e)
        for names, err in errors
        for name, e in zip(names, err.double().cpu().tolist(), strict=True)
    }
    report = build_report(
        spec, p, ranks, errs, fallbacks, seconds, mem.peak_bytes, ctx, seed, staged.shapes,
        sorted(selected),
    )  # fmt: skip
    report["resident"] = True
    return StagedResult(modules, report, artifact, staged.base)


def _batch(g: _Group, rows: list[int], weights: torch.Tensor) -> ModuleBatch:
    """Rows of a staged group as a batch: a view when the rows are contiguous (the usual case:
    every module selected), else one gather on the device."""
    if rows == list(range(rows[0], rows[-1] + 1)):
        pick: slice | torch.Tensor = slice(rows[0], rows[-1] + 1)
    else:
        pick = torch.tensor(rows, device=g.A.device)
    return ModuleBatch(
        names=[g.names[i] for i in rows],
        members=g.members,
        ranks=g.ranks,
        A=g.A[pick],
        B=g.B[pick],
        scaling=g.scaling[pick],
        weights=weights,
    )
