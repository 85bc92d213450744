"""The engine on CUDA (skipped without it): every low-rank method agrees with the CPU run,
LEGO's k-means runs on the device, the fast subspace-iteration re-rank certifies itself when
there is a spectral gap and falls back to the exact path when there is none, peak memory comes
from the CUDA allocator, and no d_out x d_in tensor appears on the device either."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from merging import merge
from merging.resident import merge_staged, stage
from merging.synthetic import random_adapter
from tests.test_merging_engine import DenseGuard
from tests.test_merging_methods import SHAPES, adapters, flat_spectrum_adapters

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

LOW_RANK = [
    ("cat", {}),
    ("svd", {"rank": 6}),
    ("lego", {"rank": 6}),
    ("lego", {"rank": 6, "gauge": "svd", "centroid": "energy", "init": "energy"}),
    ("lego", {"rank": 6, "centroid": "rank1", "kernel": "product"}),
    ("rmm", {"basis": 2}),
]


def _close(a: LoraAdapter, b: LoraAdapter, rtol: float) -> None:
    for name, mod in a:
        ref = b.modules[name].delta(np.float64)
        got = mod.delta(np.float64)
        assert np.linalg.norm(got - ref) <= rtol * np.linalg.norm(ref), name


@pytest.mark.parametrize(("method", "params"), LOW_RANK)
def test_cuda_matches_cpu(method: str, params: dict) -> None:
    ads = adapters(4, rank=4, layers=2, decay=0.3)
    w = [1.0, 0.5, 0.25, 0.8]
    cpu = merge(ads, w, method, params, device="cpu")
    gpu = merge(ads, w, method, params, device="cuda")
    assert gpu.report["device"].startswith("cuda") and gpu.report["peak_memory_bytes"] > 0
    _close(gpu.adapter, cpu.adapter, 1e-4)


def test_lego_kmeans_runs_on_the_device_and_agrees_with_cpu() -> None:
    from merging.batch import MergeContext, build_batch
    from merging.methods import lego

    ads = adapters(5, rank=4, decay=0.3)
    name = next(iter(ads[0].modules))
    labels = {}
    for dev in ("cpu", "cuda"):
        ctx = MergeContext(device=torch.device(dev), dtype=torch.float32)
        batch = build_batch(ads, [1.0] * 5, [name], ctx)
        B, A = lego._prepare_units(batch, lego.LegoParams(rank=4))
        K = lego._kernel(B, A).double()
        start = (A.norm(dim=-1) * B.norm(dim=-2)).argmax(dim=-1)
        out = lego.kernel_kmeans(K, lego._farthest_init(K, start, 4), 4, 20)
        assert out.device.type == dev
        labels[dev] = out.cpu()
    assert torch.equal(labels["cpu"], labels["cuda"])


def _gap_adapters() -> list[LoraAdapter]:
    """Related adapters: a common rank-8 part + noise, so s_8 / s_9 is large."""
    rng = np.random.default_rng(1)
    U, V = rng.standard_normal((256, 8)), rng.standard_normal((8, 192)) / 14
    return [
        LoraAdapter(
            BaseModelRef("x"),
            {
                "m": LoraModule(
                    A=(V + 0.02 * rng.standard_normal((8, 192))).astype(np.float32),
                    B=(U + 0.2 * rng.standard_normal((256, 8))).astype(np.float32),
                    alpha=8.0,
                )
            },
        )
        for _ in range(6)
    ]


def test_fast_rerank_on_cuda_certifies_with_a_gap_and_falls_back_without() -> None:
    ads = _gap_adapters()
    exact = merge(ads, [1 / 6] * 6, "svd", {"rank": 8}, device="cuda")
    fast = merge(ads, [1 / 6] * 6, "svd", {"rank": 8, "algorithm": "fast"}, device="cuda")
    assert fast.report["fast_path_fallbacks"] == 0
    _close(fast.adapter, exact.adapter, 1e-4)
    flat = flat_spectrum_adapters(np.float32)  # every singular value is 1, no gap
    res = merge(flat, [1, 1, 1], "svd", {"rank": 4, "algorithm": "fast"}, device="cuda")
    assert res.report["fast_path_fallbacks"] == 1
    err = res.report["reconstruction_error"]["max"]
    assert err == pytest.approx(np.sqrt(44 / 48), abs=1e-5)  # the exact Eckart-Young tail


@pytest.mark.parametrize(("method", "params"), LOW_RANK[:3])
def test_no_dense_delta_on_cuda(method: str, params: dict) -> None:
    d_out, d_in = 96, 80
    ads = [random_adapter({"w": (d_out, d_in)}, layers=3, rank=6, seed=i) for i in range(3)]
    guard = DenseGuard(d_out, d_in)
    with guard:
        merge(ads, [1.0, 0.5, 0.25], method, params, device="cuda")
    assert guard.calls > 10


def test_cuda_svd_is_exact_on_a_real_shape() -> None:
    shapes = {k: SHAPES[k] for k in ("q_proj", "down_proj")}
    ads = [random_adapter(shapes, layers=2, rank=8, seed=i, decay=0.1) for i in range(4)]
    ref = merge(ads, [0.25] * 4, "svd", {"rank": 8}, device="cpu", dtype=torch.float64)
    got = merge(ads, [0.25] * 4, "svd", {"rank": 8}, device="cuda")
    _close(got.adapter, ref.adapter, 1e-5)


@pytest.mark.parametrize(("method", "params"), LOW_RANK)
def test_resident_cuda_merge_matches_cpu_and_stays_on_the_device(method: str, params: dict) -> None:
    ads = adapters(4, rank=4, layers=2, decay=0.3)
    w = [1.0, 0.5, 0.25, 0.8]
    staged = stage(ads, device="cuda")
    assert all(g.A.is_cuda and g.B.is_cuda for g in staged.groups)
    out = merge_staged(staged, w, method, params)
    B, A = next(iter(out.modules.values()))
    assert B.is_cuda and A.is_cuda and out.report["device"].startswith("cuda")
    _close(out.to_adapter(), merge(ads, w, method, params, device="cpu").adapter, 1e-4)
