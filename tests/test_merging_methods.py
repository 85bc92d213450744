"""Property tests for every registered merge method (contract style, no PEFT needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hub.core.errors import BadInputError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from merging import get_method, list_methods, merge, methods_table
from merging.batch import MergeContext, build_batch
from merging.synthetic import llama_shapes, random_adapter

SHAPES = llama_shapes(48, 80, 24)
CTX64 = MergeContext(dtype=torch.float64)
# Params under which a single adapter at weight 1 must come back unchanged.
IDENTITY_PARAMS = {
    "ties": {"density": 1.0},
    "dare_linear": {"density": 1.0},
    "dare_ties": {"density": 1.0},
    "magnitude_prune": {"density": 1.0},
    "ties_svd": {"density": 1.0},
    "dare_linear_svd": {"density": 1.0},
    "dare_ties_svd": {"density": 1.0},
    "magnitude_prune_svd": {"density": 1.0},
}
TYPICAL_PARAMS = {
    **{k: {"density": 0.5} for k in IDENTITY_PARAMS},
    "svd": {"rank": 6},
    "lego": {"rank": 6},
    "rmm": {"basis": 1},
}
METHODS = [m.name for m in list_methods()]


def adapters(n: int = 3, rank: int = 4, layers: int = 1, **kw) -> list[LoraAdapter]:
    return [random_adapter(SHAPES, layers=layers, rank=rank, seed=10 + i, **kw) for i in range(n)]


def deltas(ad: LoraAdapter) -> dict[str, np.ndarray]:
    return {name: m.delta() for name, m in ad}


def run_fn(
    method: str,
    ads: list[LoraAdapter],
    weights: list[float],
    params: dict,
    ctx: MergeContext = CTX64,
) -> tuple[np.ndarray, np.ndarray, object]:
    """Call the method function directly on one module (engine refuses single adapters)."""
    spec = get_method(method)
    name = next(iter(ads[0].modules))
    out = spec.fn(build_batch(ads, weights, [name], ctx), spec.parse_params(params), ctx)
    return out.B[0].numpy(), out.A[0].numpy(), out


def weighted_sum(ads: list[LoraAdapter], weights: list[float], name: str) -> np.ndarray:
    return sum(w * ad.modules[name].delta() for w, ad in zip(weights, ads, strict=True))


@pytest.mark.parametrize("method", METHODS)
def test_single_adapter_at_weight_one_reproduces_its_delta(method: str) -> None:
    ad = adapters(1, alpha=16.0)
    B, A, _ = run_fn(method, ad, [1.0], IDENTITY_PARAMS.get(method, {}))
    ref = next(iter(deltas(ad[0]).values()))
    np.testing.assert_allclose(B @ A, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_output_ranks_shapes_and_determinism(method: str) -> None:
    ads = adapters(3, rank=4, layers=2)
    params = TYPICAL_PARAMS.get(method, {})
    r1 = merge(ads, [1.0, 0.5, 0.8], method, params, seed=7)
    r2 = merge(ads, [1.0, 0.5, 0.8], method, params, seed=7)
    expected = {"cat": 12, "rmm": 12, "svd": 6, "lego": 6}.get(method, 4)
    assert set(r1.report["per_module_ranks"].values()) == {expected}
    for name, mod in r1.adapter:
        src = ads[0].modules[name]
        assert mod.A.shape == (expected, src.in_features)
        assert mod.B.shape == (src.out_features, expected)
        assert mod.scaling == 1.0 and not mod.use_rslora
        np.testing.assert_array_equal(mod.A, r2.adapter.modules[name].A)
        np.testing.assert_array_equal(mod.B, r2.adapter.modules[name].B)
    assert r1.report["seconds"] > 0 and r1.report["device"] == "cpu"


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties", "dare_linear_svd"])
def test_dare_seed_changes_the_mask(method: str) -> None:
    ads = adapters(2)
    a = merge(ads, [1, 1], method, {"density": 0.5}, seed=1).adapter
    b = merge(ads, [1, 1], method, {"density": 0.5}, seed=2).adapter
    name = next(iter(a.modules))
    assert not np.allclose(a.modules[name].delta(), b.modules[name].delta())


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("ties", {}),
        ("ties", {"density": 0}),
        ("ties", {"density": 1.5}),
        ("svd", {"rank": 0}),
        ("lego", {"rank": -1}),
        ("cat", {"rank": 4}),
        ("ties", {"density": 0.5, "bogus": 1}),
        ("ties", {"density": 0.5, "majority_sign_method": "mean"}),
        ("rmm", {"basis": -1}),
        ("svd", {"clamp": 1.0}),
        ("lego", {"norm": "l1"}),
        ("cat", {"modules": "any"}),
    ],
)
def test_params_models_reject_bad_params(method: str, params: dict) -> None:
    with pytest.raises(BadInputError) as exc:
        merge(adapters(2), [1, 1], method, params)
    assert exc.value.code == "invalid_params"


def test_cat_equals_weighted_sum_exactly() -> None:
    ads, w = adapters(4, alpha=5.0), [1.0, -0.3, 2.0, 0.7]
    B, A, _ = run_fn("cat", ads, w, {})
    name = next(iter(ads[0].modules))
    np.testing.assert_allclose(B @ A, weighted_sum(ads, w, name), rtol=1e-12, atol=1e-14)
    res = merge(ads, w, "cat")  # fp32 engine path
    for name, mod in res.adapter:
        np.testing.assert_allclose(mod.delta(), weighted_sum(ads, w, name), rtol=1e-5, atol=1e-6)


def test_svd_equals_dense_truncated_svd() -> None:
    ads, w = adapters(3), [1.0, 0.5, -1.0]
    name = next(iter(ads[0].modules))
    dense = weighted_sum(ads, w, name)
    U, S, Vt = np.linalg.svd(dense)
    for k in (3, 7, 12):
        B, A, out = run_fn("svd", ads, w, {"rank": k})
        np.testing.assert_allclose(B @ A, (U[:, :k] * S[:k]) @ Vt[:k], atol=1e-10)
        err = np.sqrt((S[k:] ** 2).sum() / (S**2).sum())
        assert float(out.rel_error[0]) == pytest.approx(err, abs=1e-9)


def flat_spectrum_adapters(dtype: type = np.float64) -> list[LoraAdapter]:
    """Three rank-16 adapters on orthogonal blocks of one 64x64 module: their sum is a
    projection, every singular value is 1, so no rank-4 cut has a spectral gap."""
    eye = np.eye(64, dtype=dtype)
    return [
        LoraAdapter(
            BaseModelRef("x"),
            {
                "m": LoraModule(
                    A=eye[16 * i : 16 * i + 16], B=eye[:, 16 * i : 16 * i + 16], alpha=16.0
                )
            },
        )
        for i in range(3)
    ]


def test_svd_fast_matches_exact_and_falls_back_without_gap() -> None:
    ads = adapters(6, rank=8, decay=0.4)  # R = 48, decaying spectrum: clear gaps
    exact = merge(ads, [1] * 6, "svd", {"rank": 8})
    fast = merge(ads, [1] * 6, "svd", {"rank": 8, "algorithm": "fast", "fast_iters": 8})
    for name, mod in exact.adapter:
        ref = mod.delta()
        assert np.linalg.norm(fast.adapter.modules[name].delta() - ref) <= 1e-3 * np.linalg.norm(
            ref
        )
    flat = flat_spectrum_adapters(np.float64)
    res = merge(flat, [1, 1, 1], "svd", {"rank": 4, "algorithm": "fast"})
    assert res.report["fast_path_fallbacks"] == 1
    dup = merge([flat[0]] * 3, [1, 1, 1], "svd", {"rank": 4, "algorithm": "fast"})
    assert dup.report["fast_path_fallbacks"] == 1  # singular Gram: exact path


def test_svd_clamp_bounds_entries() -> None:
    B, A, _ = run_fn("svd", adapters(2), [1, 1], {"rank": 4, "clamp": 0.9})
    vals = np.concatenate([B.ravel(), A.ravel()])
    top = vals.max()  # the 0.9-quantile of the unclamped entries: the top 10% sit on it
    assert (vals >= top - 1e-12).mean() == pytest.approx(0.1, abs=0.01)
    assert vals.min() >= -top - 1e-12


def test_methods_table_lists_every_method_with_params() -> None:
    table = methods_table()
    for spec in list_methods():
        assert f"| `{spec.name}` |" in table
    assert "`density`: float = required" in table and "arXiv:2409.16167" in table


def _module(B: np.ndarray, A: np.ndarray) -> LoraAdapter:
    r = A.shape[0]
    mod = LoraModule(A=A.astype(np.float32), B=B.astype(np.float32), alpha=float(r))
    return LoraAdapter(BaseModelRef("x"), {"m": mod})


def _hard_stack(case: str) -> tuple[list[LoraAdapter], list[float]]:
    """Stacks that make a Gram matrix singular or ill-conditioned (d_out=72, d_in=56, R=24)."""
    rng = np.random.default_rng(5)

    def rand(r: int = 4) -> LoraAdapter:
        return _module(rng.standard_normal((72, r)), rng.standard_normal((r, 56)) / 8)

    ads = [rand() for _ in range(6)]
    w = [1.0, 0.5, -0.7, 0.3, 1.2, 0.8]
    if case == "duplicated":  # the same adapter three times (+ its negation-free copies)
        ads = [ads[0], ads[0], ads[0], ads[1], ads[1], ads[2]]
    elif case == "zero":  # all-zero factors in two members
        zero = _module(np.zeros((72, 4)), np.zeros((4, 56)))
        ads = [ads[0], zero, ads[2], zero, ads[4], ads[5]]
    elif case == "tiny_scales":
        w = [1.0, 1e-6, 1e-9, 1e-12, 0.5, 0.0]
    elif case == "near_deficient":  # B columns share a rank-6 span up to 1e-7 noise
        span = rng.standard_normal((72, 6))
        ads = [
            _module(
                span @ rng.standard_normal((6, 4)) + 1e-7 * rng.standard_normal((72, 4)),
                a.modules["m"].A,
            )
            for a in ads
        ]
    elif case == "gray_zone":  # eigenvalues of the unit Gram ~1e-10: Householder QR fallback
        base = rng.standard_normal((72, 4))
        ads = [_module(base + 1e-5 * rng.standard_normal((72, 4)), a.modules["m"].A) for a in ads]
    return ads, w


def _dense64(ads: list[LoraAdapter], w: list[float]) -> np.ndarray:
    return sum(wi * ad.modules["m"].delta(np.float64) for wi, ad in zip(w, ads, strict=True))


@pytest.mark.parametrize(
    "case", ["random", "duplicated", "zero", "tiny_scales", "near_deficient", "gray_zone"]
)
@pytest.mark.parametrize("algorithm", ["exact", "fast"])
def test_svd_fp32_gram_path_is_exact_on_hard_stacks(case: str, algorithm: str) -> None:
    """fp32 engine path (Gram + eigh, QR fallback) vs a dense fp64 truncated SVD: the achieved
    error must be the optimal tail (Eckart-Young) to 1e-4 of ||dW||, ties at k or not."""
    ads, w = _hard_stack(case)
    dense = _dense64(ads, w)
    S = np.linalg.svd(dense, compute_uv=False)
    norm = np.linalg.norm(dense)
    for k in (3, 8):
        res = merge(ads, w, "svd", {"rank": k, "algorithm": algorithm})
        got = res.adapter.modules["m"].delta(np.float64)
        tail = np.sqrt((S[k:] ** 2).sum())
        assert np.linalg.norm(dense - got) <= tail + 1e-4 * norm, (case, k)
        if S[k - 1] > 1.01 * S[k] and S[k - 1] > 1e-6 * S[0]:  # unique best rank k: match it
            U, _, Vt = np.linalg.svd(dense)
            best = (U[:, :k] * S[:k]) @ Vt[:k]
            assert np.linalg.norm(got - best) <= 1e-4 * norm, (case, k)
        err = res.report["reconstruction_error"]["max"]
        assert err == pytest.approx(tail / norm if norm else 0.0, abs=1e-5)
    if case == "gray_zone":
        assert res.report["fast_path_fallbacks"] == 1  # Householder QR took this module


def test_svd_gram_path_matches_householder_reference() -> None:
    """The fp32 Gram path against rerank_qr in fp64 (the benchmark's reference algorithm)."""
    from merging.lowrank import rel_error, rerank_gram, rerank_qr

    gen = torch.Generator().manual_seed(0)
    B = torch.randn(3, 300, 40, generator=gen) * torch.exp(-0.2 * torch.arange(40.0))
    A = torch.randn(3, 40, 200, generator=gen) / 15
    c = torch.linspace(-1.0, 2.0, 40).expand(3, 40)
    ref = rerank_qr(B.double() * c.double()[:, None, :], A.double(), 8)
    got = rerank_gram(B, A, 8, coeffs=c)
    assert got.B.dtype == torch.float32 and got.fallbacks == 0
    assert float(rel_error(ref.B, ref.A, got.B, got.A).max()) < 1e-6
    torch.testing.assert_close(got.S.double(), ref.S, rtol=1e-5, atol=1e-7)


def test_svd_fast_passes_its_checks_on_a_spectral_gap() -> None:
    """Related adapters (common rank-r part + noise): subspace iteration is certified for every
    module (no fallback) and agrees with the exact path."""
    rng = np.random.default_rng(1)
    U, V = rng.standard_normal((96, 8)), rng.standard_normal((8, 80)) / 9
    ads = [
        _module(U + 0.2 * rng.standard_normal((96, 8)), V + 0.02 * rng.standard_normal((8, 80)))
        for _ in range(6)
    ]
    exact = merge(ads, [1 / 6] * 6, "svd", {"rank": 8})
    fast = merge(ads, [1 / 6] * 6, "svd", {"rank": 8, "algorithm": "fast"})
    assert fast.report["fast_path_fallbacks"] == 0 and exact.report["fast_path_fallbacks"] == 0
    ref = exact.adapter.modules["m"].delta()
    got = fast.adapter.modules["m"].delta()
    assert np.linalg.norm(got - ref) <= 1e-4 * np.linalg.norm(ref)
    e_fast = fast.report["reconstruction_error"]["max"]
    assert e_fast == pytest.approx(exact.report["reconstruction_error"]["max"], rel=1e-3)
