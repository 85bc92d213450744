"""Engine validation (one typed error per bad input), scale, and the no-dense-matrix guarantee."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from hub.core.errors import BadInputError, HubError, UnknownNameError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from merging import MERGE_CODES, merge
from merging.resident import merge_staged, stage
from tests.test_merging_methods import adapters


def with_modules(ad: LoraAdapter, keep) -> LoraAdapter:  # noqa: ANN001
    return LoraAdapter(base=ad.base, modules={n: m for n, m in ad if keep(n)})


def code_of(fn) -> str:  # noqa: ANN001
    with pytest.raises(HubError) as exc:
        fn()
    assert exc.value.code in MERGE_CODES, exc.value.code
    return exc.value.code


def test_each_bad_input_has_its_code() -> None:
    a, b = adapters(2)
    dora = replace(b, mergeable=False, not_mergeable_reason="DoRA magnitude vectors")
    other = replace(b, base=BaseModelRef("other-model"))
    fp1, fp2 = (
        replace(x, base=BaseModelRef(a.base.model_id, fingerprint=f))
        for x, f in ((a, "aa" * 32), (b, "bb" * 32))
    )
    q_only = with_modules(b, lambda n: n.endswith("q_proj"))
    v_only = with_modules(a, lambda n: n.endswith("v_proj"))
    assert code_of(lambda: merge([a], [1], "cat")) == "merge_too_few_adapters"
    assert code_of(lambda: merge([a, dora], [1, 1], "cat")) == "not_mergeable"
    assert code_of(lambda: merge([a, other], [1, 1], "cat")) == "base_model_mismatch"
    assert code_of(lambda: merge([fp1, fp2], [1, 1], "cat")) == "base_model_mismatch"
    assert code_of(lambda: merge([v_only, q_only], [1, 1], "cat")) == "target_modules_disjoint"
    assert code_of(lambda: merge([a, q_only], [1, 1], "cat")) == "module_set_mismatch"
    assert code_of(lambda: merge([a, b], [1], "cat")) == "weights_count_mismatch"
    assert code_of(lambda: merge([a, b], [1, float("nan")], "cat")) == "weights_not_finite"
    assert code_of(lambda: merge([a, b], [1, float("inf")], "svd")) == "weights_not_finite"
    assert code_of(lambda: merge([a, b], [1, 1], "nope")) == "unknown_method"
    assert code_of(lambda: merge([a, b], [1, 1], "svd", {"rank": 9})) == "target_rank_too_large"
    assert code_of(lambda: merge([a, b], [1, 1], "lego", {"rank": 9})) == "target_rank_too_large"
    r8 = adapters(1, rank=8)[0]
    assert code_of(lambda: merge([a, r8], [1, 1], "ties", {"density": 0.5})) == "rank_mismatch"
    if not torch.cuda.is_available():
        assert code_of(lambda: merge([a, b], [1, 1], "cat", device="cuda")) == (
            "device_unavailable"
        )


def test_unknown_method_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError) as exc:
        merge(adapters(2), [1, 1], "tie")
    assert "ties" in exc.value.message and "lego" in exc.value.message


def test_shape_mismatch_is_refused() -> None:
    a = adapters(1)[0]
    name, mod = next(iter(a))
    bad = LoraModule(
        A=np.zeros((4, mod.in_features + 1)), B=np.zeros((mod.out_features, 4)), alpha=8.0
    )
    b = LoraAdapter(base=a.base, modules={**dict(a.modules), name: bad})
    with pytest.raises(BadInputError) as exc:
        merge([a, b], [1, 1], "cat")
    assert exc.value.code == "module_shape_mismatch" and exc.value.details["module"] == name


def test_module_policies_intersection_and_union() -> None:
    a, b = adapters(2)
    q_only = with_modules(b, lambda n: n.endswith("q_proj"))
    inter = merge([a, q_only], [1, 1], "cat", {"modules": "intersection"})
    assert set(inter.adapter.modules) == set(q_only.modules)
    assert len(inter.report["modules_skipped"]) == len(a.modules) - len(q_only.modules)
    union = merge([a, q_only], [1.0, 2.0], "cat", {"modules": "union"})
    assert set(union.adapter.modules) == set(a.modules)
    for name, m in union.adapter:  # absent member contributes nothing
        ref = a.modules[name].delta() + (
            2 * b.modules[name].delta() if name in q_only.modules else 0
        )
        np.testing.assert_allclose(m.delta(), ref, rtol=1e-5, atol=1e-6)


def test_two_hundred_adapters_merge_with_progress() -> None:
    tiny = {"q_proj": (16, 12), "v_proj": (8, 12)}
    from merging.synthetic import random_adapter

    ads = [random_adapter(tiny, layers=2, rank=2, seed=i) for i in range(200)]
    seen: list[tuple[int, int]] = []
    res = merge(ads, [1 / 200] * 200, "svd", {"rank": 4}, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (4, 4) and set(res.report["per_module_ranks"].values()) == {4}
    cat = merge(ads, [1 / 200] * 200, "cat")
    assert set(cat.report["per_module_ranks"].values()) == {400}


class DenseGuard(TorchFunctionMode):
    """Fails on any torch result with a d_out x d_in matrix in its trailing dimensions."""

    def __init__(self, d_out: int, d_in: int) -> None:
        super().__init__()
        self.limit, self.dims, self.calls = d_out * d_in, {d_out, d_in}, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        self.calls += 1
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 1:
                # a matrix in the trailing dims, or one flattened into a vector (kron, reshape)
                size = t.shape[-1] * t.shape[-2] if t.dim() >= 2 else t.shape[0]
                assert size < self.limit, f"{func} made a dense {tuple(t.shape)} tensor"
        return out


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("cat", {}),
        ("svd", {"rank": 8}),
        ("svd", {"rank": 8, "algorithm": "fast"}),
        ("lego", {"rank": 8}),
        ("lego", {"rank": 8, "centroid": "rank1", "kernel": "product", "gauge": "svd"}),
        ("rmm", {"basis": 2}),
    ],
)
def test_low_rank_methods_never_allocate_a_dense_delta(method: str, params: dict) -> None:
    d_out, d_in = 96, 80  # both larger than the total rank 3 x 6 = 18
    from merging.synthetic import random_adapter

    ads = [random_adapter({"w": (d_out, d_in)}, layers=3, rank=6, seed=i) for i in range(3)]
    guard = DenseGuard(d_out, d_in)
    with guard:
        merge(ads, [1.0, 0.5, 0.25], method, params)
    assert guard.calls > 10  # the mode really saw the tensor work
    staged = stage(ads, device="cpu")
    with DenseGuard(d_out, d_in):  # the device-resident path runs the same method code
        merge_staged(staged, [1.0, 0.5, 0.25], method, params)


def test_dense_guard_catches_a_dense_method() -> None:
    from merging.synthetic import random_adapter

    ads = [random_adapter({"w": (96, 80)}, layers=1, rank=6, seed=i) for i in range(2)]
    with pytest.raises(AssertionError, match="dense"), DenseGuard(96, 80):
        merge(ads, [1, 1], "ties_svd", {"density": 0.5})
    with pytest.raises(AssertionError, match="dense"), DenseGuard(96, 80):
        torch.kron(torch.ones(96), torch.ones(80))  # a delta flattened into a vector


@pytest.mark.parametrize(
    ("method", "params"),
    [("cat", {}), ("svd", {"rank": 4}), ("lego", {"rank": 4}), ("rmm", {"basis": 2})],
)
def test_low_rank_methods_allocate_no_dense_numpy_array(method: str, params: dict) -> None:
    """The torch guard above cannot see numpy; tracemalloc does (numpy reports its buffers).
    One dense fp32 delta of this module is 4 MiB; everything a low-rank merge needs is ~0.1."""
    import tracemalloc

    from merging.synthetic import random_adapter

    ads = [random_adapter({"w": (1024, 1024)}, layers=1, rank=2, seed=i) for i in range(3)]
    merge(ads, [1.0, 0.5, 0.25], method, params)  # warm-up: lazy imports, first-use caches
    tracemalloc.start()
    try:
        merge(ads, [1.0, 0.5, 0.25], method, params)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024 * 4 // 4, f"{method}: numpy peak {peak} bytes"


def test_numpy_dense_check_sees_a_dense_numpy_product() -> None:
    import tracemalloc

    a = np.ones((1024, 2), np.float32)
    tracemalloc.start()
    try:
        _ = a @ a.T  # what a module's delta costs
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= 1024 * 1024 * 4


def test_a_method_output_that_is_not_finite_is_refused(monkeypatch) -> None:
    import merging.registry as registry
    from merging.registry import BatchOutput

    cat = registry.get_method("cat")

    def nan_cat(batch, p, ctx):  # noqa: ANN001, ANN202
        out = cat.fn(batch, p, ctx)
        return BatchOutput(B=out.B * float("nan"), A=out.A)

    monkeypatch.setitem(registry._REGISTRY, "cat", replace(cat, fn=nan_cat))
    with pytest.raises(HubError) as exc:
        merge(adapters(2), [1.0, 1.0], "cat")
    assert exc.value.code == "merge_not_finite"


def test_linear_algebra_failures_are_merge_not_finite(monkeypatch) -> None:
    """Factors at the edge of fp32 pass the input check (finite) but their products do not:
    the SVD path fails inside torch.linalg, which must surface as a typed error."""
    huge = adapters(2)
    for ad in huge:
        for mod in ad.modules.values():
            mod.A[...] = 3e38
            mod.B[...] = 3e38
    with pytest.raises(HubError) as exc:
        merge(huge, [1.0, 1.0], "svd", {"rank": 2})
    assert exc.value.code == "merge_not_finite"


PEAK_PROBE = """
import numpy as np, torch
from merging.memory import PeakMemory
with PeakMemory(torch.device("cpu")) as small:
    pass
with PeakMemory(torch.device("cpu")) as big:
    block = np.ones(16 << 20, np.float32)  # 64 MiB, touched
    del block
print(small.peak_bytes, big.peak_bytes)
"""


def test_peak_memory_is_measured_on_cpu() -> None:
    # A fresh interpreter: in a long test session other threads free memory meanwhile, and an
    # RSS high-water mark cannot tell that from an allocation that was never made.
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],  # `-c` puts the cwd on sys.path
    )
    assert done.returncode == 0, done.stderr
    small, big = map(int, done.stdout.split())
    assert big >= 48 << 20 and small < 16 << 20
    report = merge(adapters(2), [1.0, 1.0], "cat").report
    assert isinstance(report["peak_memory_bytes"], int) and report["peak_memory_bytes"] >= 0


@pytest.mark.parametrize(("method", "params"), [("svd", {"rank": 5}), ("cat", {})])
def test_batch_buffer_reuse_does_not_leak_between_batches(method: str, params: dict) -> None:
    """Batches share scratch buffers; one-module batches of alternating shapes must give the
    same result as one batch per shape, and torch's thread setting must be left as found."""
    ads = adapters(3, layers=3)
    threads = torch.get_num_threads()
    one = merge(ads, [1.0, -0.5, 0.8], method, params, max_batch=1)
    many = merge(ads, [1.0, -0.5, 0.8], method, params)
    assert torch.get_num_threads() == threads
    for name, mod in many.adapter:
        np.testing.assert_allclose(one.adapter.modules[name].delta(), mod.delta(), atol=1e-5)


def test_concurrent_merges_restore_the_thread_count() -> None:
    """Merges in parallel threads (job workers) each narrow and widen torch's thread count; none
    may leave the main thread on one thread afterwards (see hub.runtime.threads)."""
    import threading

    ads = adapters(3, layers=2)
    threads = torch.get_num_threads()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                merge(ads, [1.0, 0.5, 0.8], "svd", {"rank": 5})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors and torch.get_num_threads() == threads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_finite_flag_sees_every_non_finite_value(dtype: torch.dtype, bad: float) -> None:
    from merging.engine import finite_flag

    ok = torch.randn(3, 40, 7, dtype=dtype)
    assert bool(finite_flag(ok, ok[0]))
    for where in [(0, 0, 0), (2, 39, 6), (1, 17, 3)]:
        x = ok.clone()
        x[where] = bad
        assert not bool(finite_flag(ok, x)) and not bool(finite_flag(x))
