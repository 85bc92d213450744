"""Merge engine: validate, run a registered method module by module, report, never publish.

``merge`` is pure compute: it returns a new ``LoraAdapter`` plus a report and, for revertible
methods (RMM), an artifact of named numpy tensors + JSON metadata; registering the result, its
lineage and the artifact blob is the service's job. Every refusal happens before tensor work.

Output convention: each merged module has ``alpha = rank`` and ``use_rslora = False``, so its
runtime scaling is 1 and every input's ``w_i * s_i`` lives inside the factors (as PEFT does for
``add_weighted_adapter``; we do *not* inherit rsLoRA from the first input, PEFT 0.21's
over-scaling bug, PR #3449).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hub.core.errors import BadInputError, HubError
from hub.core.lora import LoraAdapter, LoraModule
from hub.runtime.threads import torch_threads
from merging.batch import MergeContext, ModuleBatch, iter_batches
from merging.memory import PeakMemory
from merging.planning import check_request
from merging.registry import BatchOutput, MergeParams, MethodSpec, get_method
from merging.validation import AdapterShapes, check_adapters

Progress = Callable[[int, int], None]  # (modules done, modules total)


@dataclass(frozen=True)
class MergeArtifact:
    """Extra state a method keeps beside the adapter (RMM basis + coefficients).

    ``tensors`` keys are ``"{module}::{field}"``; ``metadata`` is JSON-serialisable.
    """

    kind: str
    tensors: dict[str, np.ndarray]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class MergeResult:
    adapter: LoraAdapter
    report: dict[str, Any]
    artifact: MergeArtifact | None = None


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BadInputError(
            f"unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N", code="bad_device"
        ) from None
    if dev.type not in ("cpu", "cuda"):
        raise BadInputError(
            f"device {str(device)!r} is not supported: use auto, cpu, cuda or cuda:N",
            code="bad_device",
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(
            "device 'cuda' requested but CUDA is not available", code="device_unavailable"
        )
    return dev


def merge(
    adapters: Sequence[LoraAdapter],
    weights: Sequence[float],
    method: str,
    params: dict[str, Any] | None = None,
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    names: Sequence[str] | None = None,
    max_batch: int = 32,
    dtype: torch.dtype = torch.float32,
) -> MergeResult:
    """Merge ``adapters`` with ``weights`` by ``method``. ``names`` label inputs in errors and
    in the artifact (default ``#0, #1, ...``); ``dtype`` is the compute precision (fp32; fp64
    for references)."""
    spec = get_method(method)
    p = spec.parse_params(params)
    labels = list(names) if names is not None else [f"#{i}" for i in range(len(adapters))]
    check_adapters(adapters, labels)
    modules = check_request(spec, p, adapters, weights, labels)
    ctx = MergeContext(device=resolve_device(device), dtype=dtype, seed=seed)
    t0 = time.perf_counter()
    with torch.inference_mode(), PeakMemory(ctx.device) as mem:
        out = _run(
            spec,
            p,
            adapters,
            [float(w) for w in weights],
            modules,
            ctx,
            1 if spec.dense else max_batch,
            progress,
        )
    seconds = time.perf_counter() - t0
    merged = LoraAdapter(base=adapters[0].base, modules=out.modules)
    ranks = {n: m.rank for n, m in out.modules.items()}
    report = build_report(
        spec, p, ranks, out.errors, out.fallbacks, seconds, mem.peak_bytes, ctx, seed, adapters,
        modules,
    )  # fmt: skip
    artifact = None
    if spec.artifact_kind:
        artifact = MergeArtifact(
            spec.artifact_kind, out.artifact, _artifact_meta(spec, p, adapters, labels, out)
        )
        # storage accounting: numbers in the artifact vs in the members it can revert
        report["artifact_parameters"] = int(sum(t.size for t in out.artifact.values()))
        report["member_parameters"] = int(
            sum(ad.modules[n].num_parameters for ad in adapters for n in modules if n in ad.modules)
        )
        # the registered adapter is stored beside the artifact (for RMM: the reverted members
        # side by side, as large as the members themselves)
        report["adapter_parameters"] = int(sum(m.num_parameters for m in out.modules.values()))
    return MergeResult(adapter=merged, report=report, artifact=artifact)


@dataclass
class _RunOutput:
    modules: dict[str, LoraModule]
    errors: dict[str, float]
    artifact: dict[str, np.ndarray]
    members: dict[str, list[int]]
    fallbacks: int = 0


def _run(
    spec: MethodSpec,
    p: MergeParams,
    adapters: Sequence[LoraAdapter],
    weights: list[float],
    modules: list[str],
    ctx: MergeContext,
    max_batch: int,
    progress: Progress | None,
) -> _RunOutput:
    out = _RunOutput({}, {}, {}, {})
    done = 0
    # batches share buffers: _collect copies each result out before the next batch is built
    for batch in iter_batches(adapters, weights, modules, ctx, max_batch, reuse_buffers=True):
        res = run_method(spec, batch, p, ctx)
        _collect(out, batch.names, list(batch.members), res)
        done += len(batch.names)
        if progress is not None:
            progress(done, len(modules))
    return out


def run_method(
    spec: MethodSpec, batch: ModuleBatch, p: MergeParams, ctx: MergeContext
) -> BatchOutput:
    """One batch through ``spec``; a linear-algebra failure is the inputs' fault, named so."""
    try:
        return spec.fn(batch, p, ctx)
    except torch.linalg.LinAlgError as exc:  # an SVD/eigh of non-finite or extreme values
        raise HubError(
            f"merging modules {batch.names[0]}... failed in linear algebra ({exc}); "
            "the inputs hold non-finite or extreme values",
            code="merge_not_finite",
        ) from None


def finite_flag(*tensors: torch.Tensor) -> torch.Tensor:
    """0-dim bool on the tensors' device, no host sync: every entry is finite. Min and max
    propagate NaN and show +-inf, so one reduction per tensor decides it; ``isfinite(t).all()``
    first writes a bool per entry, seconds of page faults for a 7B-shape ``cat``."""
    flags = [torch.isfinite(torch.stack(torch.aminmax(t))).all() for t in tensors]
    return torch.stack(flags).all()


def _collect(out: _RunOutput, names: list[str], members: list[int], res: BatchOutput) -> None:
    with torch_threads(1, res.B.device):  # one reduction per output: 2 threads only add stalls
        finite = bool(finite_flag(res.B, res.A))
    if not finite:
        raise HubError(
            f"merged factors are not finite (modules {names[0]}...)", code="merge_not_finite"
        )
    B = res.B.cpu().numpy()  # compute dtype: fp32, or fp64 for references
    A = res.A.cpu().numpy()
    err = None if res.rel_error is None else res.rel_error.double().cpu().numpy()
    for j, name in enumerate(names):
        k = A.shape[1]
        out.modules[name] = LoraModule(A=A[j].copy(), B=B[j].copy(), alpha=float(k))
        out.members[name] = members
        if err is not None:
            out.errors[name] = float(err[j])
        for field, t in (res.artifact or {}).items():
            out.artifact[f"{name}::{field}"] = t[j].float().cpu().numpy().copy()
    out.fallbacks += res.fallbacks


def build_report(
    spec: MethodSpec,
    p: MergeParams,
    ranks: dict[str, int],
    errors: dict[str, float],
    fallbacks: int,
    seconds: float,
    peak: int,
    ctx: MergeContext,
    seed: int,
    adapters: Sequence[AdapterShapes],
    modules: Sequence[str],
) -> dict[str, Any]:
    union = sorted(set().union(*(ad.modules for ad in adapters)))
    report: dict[str, Any] = {
        "method": spec.name,
        "params": p.model_dump(mode="json"),
        "seed": seed,
        "n_adapters": len(adapters),
        "seconds": seconds,
        "peak_memory_bytes": int(peak),
        "device": str(ctx.device),
        "dtype": str(ctx.dtype).removeprefix("torch."),
        "torch_version": torch.__version__,
        "per_module_ranks": ranks,
        "modules_skipped": [n for n in union if n not in set(modules)],
        "fast_path_fallbacks": fallbacks,
        "reconstruction_error": None,
    }
    if errors:
        vals = list(errors.values())
        report["reconstruction_error"] = {
            "reference": spec.error_reference,
            "max": max(vals),
            "mean": float(np.mean(vals)),
            "per_module": errors,
        }
    return report


def _artifact_meta(
    spec: MethodSpec,
    p: MergeParams,
    adapters: Sequence[LoraAdapter],
    labels: list[str],
    out: _RunOutput,
) -> dict[str, Any]:
    base = adapters[0].base
    return {
        "kind": spec.artifact_kind,
        "format_version": 1,
        "method": spec.name,
        "params": p.model_dump(mode="json"),
        "members": labels,
        "base": {
            "model_id": base.model_id,
            "revision": base.revision,
            "fingerprint": base.fingerprint,
        },
        # per module: which members it holds (coefficient column order) and their ranks
        "modules": {
            name: {
                "members": out.members[name],
                "ranks": [adapters[i].modules[name].rank for i in out.members[name]],
            }
            for name in out.modules
        },
    }


def revert(artifact: MergeArtifact, member: int | str) -> LoraAdapter:
    """Reconstruct one member (index or label) from a revertible artifact (RMM)."""
    from merging.methods.rmm import revert_member

    if artifact.kind != "rmm":
        raise BadInputError(
            f"artifact kind {artifact.kind!r} is not revertible", code="rmm_artifact_invalid"
        )
    return revert_member(artifact.tensors, artifact.metadata, member)
