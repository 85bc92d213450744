"""LoRA-LEGO and RMM invariants (ALGORITHMS.md §3.5 and §4.4), exact in float64."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hub.core.errors import BadInputError
from hub.core.lora import LoraAdapter, LoraModule
from merging import merge, revert
from merging.methods.rmm import storage_params
from tests.test_merging_methods import adapters, run_fn, weighted_sum

NO_REWEIGHT = {"param_reweight": False, "output_reweight": False}


def permuted(ad: LoraAdapter, seed: int, flip: bool = False) -> LoraAdapter:
    """Same deltas, rank units shuffled (and optionally (b, a) -> (-b, -a) at random)."""
    rng = np.random.default_rng(seed)
    mods = {}
    for name, m in ad:
        perm = rng.permutation(m.rank)
        sign = rng.choice([-1.0, 1.0], m.rank) if flip else np.ones(m.rank)
        mods[name] = LoraModule(A=m.A[perm] * sign[:, None], B=m.B[:, perm] * sign, alpha=m.alpha)
    return LoraAdapter(base=ad.base, modules=mods)


@pytest.mark.parametrize("params", [{"rank": 5}, {"rank": 5, "balance": True, "norm": "linf"}])
def test_lego_rank_permutation_and_sign_flip_leave_result_unchanged(params: dict) -> None:
    ads, w = adapters(3), [1.0, 0.5, 2.0]
    B, A, _ = run_fn("lego", ads, w, params)
    shuffled = [permuted(ad, seed=i, flip=True) for i, ad in enumerate(ads)]
    B2, A2, _ = run_fn("lego", shuffled, w, params)
    np.testing.assert_allclose(B2 @ A2, B @ A, rtol=1e-9, atol=1e-12)


def test_lego_k_equal_total_rank_without_reweighting_is_cat() -> None:
    ads, w = adapters(3), [1.0, 0.5, 2.0]
    B, A, out = run_fn("lego", ads, w, {"rank": 12, **NO_REWEIGHT})
    name = next(iter(ads[0].modules))
    np.testing.assert_allclose(B @ A, weighted_sum(ads, w, name), rtol=1e-10, atol=1e-12)
    assert float(out.rel_error[0]) < 1e-7
    B, A, _ = run_fn("lego", ads, w, {"rank": 12, "output_reweight": False})  # singletons: ratio 1
    np.testing.assert_allclose(B @ A, weighted_sum(ads, w, name), rtol=1e-10, atol=1e-12)
    B, A, _ = run_fn("lego", ads, w, {"rank": 12})  # output reweight: sqrt(r / k) = sqrt(4 / 12)
    np.testing.assert_allclose(B @ A, np.sqrt(4 / 12) * weighted_sum(ads, w, name), atol=1e-12)


def test_lego_identical_copies_merge_back_to_the_original() -> None:
    ad = adapters(1, rank=4)[0]
    res = merge(
        [ad, permuted(ad, 3), ad, permuted(ad, 4, flip=True)], [1, 1, 1, 1], "lego", {"rank": 4}
    )
    for name, m in res.adapter:
        np.testing.assert_allclose(m.delta(), ad.modules[name].delta(), rtol=1e-4, atol=1e-6)


def regauged(ad: LoraAdapter, seed: int) -> LoraAdapter:
    """Same deltas in another GL(r) gauge: (B M, M^-1 A) for a random well-conditioned M."""
    rng = np.random.default_rng(seed)
    mods = {}
    for name, m in ad:
        M = np.eye(m.rank) + 0.3 * rng.standard_normal((m.rank, m.rank))
        mods[name] = LoraModule(A=np.linalg.solve(M, m.A), B=m.B @ M, alpha=m.alpha)
    return LoraAdapter(base=ad.base, modules=mods)


def test_lego_positive_unit_rescaling_keeps_the_clusters() -> None:
    """Features are directions only (§3.5.4): (c b, a / c) with c > 0 changes no label."""
    from merging.batch import MergeContext, build_batch
    from merging.methods import lego

    ads = adapters(4)
    rng = np.random.default_rng(3)
    rescaled = []
    for ad in ads:
        mods = {}
        for name, m in ad:
            c = rng.uniform(0.2, 5.0, m.rank)
            mods[name] = LoraModule(A=m.A / c[:, None], B=m.B * c, alpha=m.alpha)
        rescaled.append(LoraAdapter(base=ad.base, modules=mods))
    ctx, p = MergeContext(dtype=torch.float64), lego.LegoParams(rank=5)
    name = next(iter(ads[0].modules))
    labels = []
    for group in (ads, rescaled):
        B, A = lego._prepare_units(build_batch(group, [1.0] * 4, [name], ctx), p)
        K = lego._kernel(B, A)
        start = torch.zeros(1, dtype=torch.long)  # same seed unit in both runs
        labels.append(lego.kernel_kmeans(K, lego._farthest_init(K, start, 5), 5, 20))
    assert torch.equal(labels[0], labels[1])


SVD_GAUGE = {"rank": 5, "gauge": "svd", "centroid": "energy", "init": "energy"}


def test_lego_svd_gauge_is_invariant_to_the_factor_gauge() -> None:
    """Raw units are an arbitrary GL(r) mix; in the SVD gauge (B M, M^-1 A) merges the same."""
    ads, w = adapters(3), [1.0, 0.5, 2.0]
    B, A, _ = run_fn("lego", ads, w, SVD_GAUGE)
    B2, A2, _ = run_fn("lego", [regauged(ad, i) for i, ad in enumerate(ads)], w, SVD_GAUGE)
    np.testing.assert_allclose(B2 @ A2, B @ A, rtol=1e-7, atol=1e-9)
    raw = {"rank": 5}
    B, A, _ = run_fn("lego", ads, w, raw)
    B2, A2, _ = run_fn("lego", [regauged(ad, i) for i, ad in enumerate(ads)], w, raw)
    assert not np.allclose(B2 @ A2, B @ A, atol=1e-6)  # the raw gauge is not invariant


@pytest.mark.parametrize("params", [SVD_GAUGE, {"rank": 4, "init": "energy"}])
def test_lego_options_keep_identity_and_cat_properties(params: dict) -> None:
    ad = adapters(1, rank=4)[0]
    copies = [ad, permuted(ad, 3), regauged(ad, 5) if "gauge" in params else ad]
    res = merge(copies, [1, 1, 1], "lego", {**params, "rank": 4})
    for name, m in res.adapter:
        np.testing.assert_allclose(m.delta(), ad.modules[name].delta(), rtol=1e-4, atol=1e-6)
    ads, w = adapters(3), [1.0, 0.5, 2.0]
    B, A, _ = run_fn("lego", ads, w, {**params, "rank": 12, **NO_REWEIGHT})
    name = next(iter(ads[0].modules))
    np.testing.assert_allclose(B @ A, weighted_sum(ads, w, name), rtol=1e-9, atol=1e-11)


def test_lego_norm_calibration_matches_the_weighted_sum_norm() -> None:
    ads, w = adapters(4), [0.25] * 4
    B, A, _ = run_fn("lego", ads, w, {"rank": 4, "calibrate": "norm"})
    name = next(iter(ads[0].modules))
    ref = weighted_sum(ads, w, name)
    assert np.linalg.norm(B @ A) == pytest.approx(np.linalg.norm(ref), rel=1e-9)
    ad = adapters(1, rank=4)[0]  # mean weights over identical copies: the original again
    res = merge([ad] * 3, [1 / 3] * 3, "lego", {"rank": 4, "calibrate": "norm"})
    for name, m in res.adapter:
        np.testing.assert_allclose(m.delta(), ad.modules[name].delta(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("extra", [{}, {"centroid": "rank1", "kernel": "product"}])
def test_lego_refit_is_least_squares_over_legos_own_directions(extra: dict) -> None:
    """refit keeps the clusters' directions and picks each one's coefficient against the
    weighted sum: never further from it than the same directions unscaled or norm-matched
    (both are points of the same least-squares problem), exact when k is the total rank, and
    the normal equations hold (the residual is orthogonal to every unit)."""
    ads, w = adapters(4), [0.25, 0.5, 1.0, 0.25]
    name = next(iter(ads[0].modules))
    ref = weighted_sum(ads, w, name)
    err = {}
    for calibrate in ("none", "norm", "refit"):
        B, A, out = run_fn("lego", ads, w, {"rank": 4, "calibrate": calibrate, **extra})
        err[calibrate] = float(out.rel_error[0])
        assert err[calibrate] == pytest.approx(
            np.linalg.norm(B @ A - ref) / np.linalg.norm(ref), rel=1e-6
        )
    assert err["refit"] <= min(err["none"], err["norm"]) + 1e-12
    B, A, _ = run_fn("lego", ads, w, {"rank": 4, "calibrate": "refit", **extra})
    residual = B @ A - ref
    for j in range(B.shape[1]):  # <residual, b_j a_j^T>_F = b_j^T residual a_j = 0
        unit = np.outer(B[:, j], A[j])
        assert abs(np.sum(residual * unit)) <= 1e-8 * np.linalg.norm(ref) * np.linalg.norm(unit)
    B, A, out = run_fn("lego", ads, w, {"rank": 16, "calibrate": "refit", **extra})
    np.testing.assert_allclose(B @ A, ref, rtol=1e-6, atol=1e-9)  # up to the 1e-10 ridge
    assert float(out.rel_error[0]) < 1e-6


RANK1 = {"centroid": "rank1", "kernel": "product", "canonical_sign": False}


@pytest.mark.parametrize("extra", [{}, {"gauge": "svd", "init": "energy"}])
def test_lego_rank1_centroids_have_sum_semantics(extra: dict) -> None:
    """k = total rank is ``cat`` exactly; identical copies at weights 1/n merge back to the
    original (sum semantics), and at weights 1 to n times it; the product kernel needs no sign
    canonicalisation (it cannot see (b, a) -> (-b, -a))."""
    params = {**RANK1, **extra}
    ads, w = adapters(3), [1.0, 0.5, 2.0]
    name = next(iter(ads[0].modules))
    B, A, out = run_fn("lego", ads, w, {**params, "rank": 12})
    np.testing.assert_allclose(B @ A, weighted_sum(ads, w, name), rtol=1e-9, atol=1e-11)
    assert float(out.rel_error[0]) < 1e-7
    ad = adapters(1, rank=4)[0]
    copies = [ad, permuted(ad, 3, flip=True), permuted(ad, 4, flip=True)]
    # rank 6 > the 4 distinct units: surplus clusters stay empty and contribute exact zeros
    for weight, times, rank in ((1 / 3, 1.0, 4), (1.0, 3.0, 4), (1 / 3, 1.0, 6)):
        res = merge(copies, [weight] * 3, "lego", {**params, "rank": rank})
        for mod, m in res.adapter:
            want = times * ad.modules[mod].delta()
            np.testing.assert_allclose(m.delta(), want, rtol=1e-4, atol=1e-6)
    B, A, _ = run_fn("lego", ads, w, {**params, "rank": 5})
    flipped = [permuted(x, seed=i, flip=True) for i, x in enumerate(ads)]
    B2, A2, _ = run_fn("lego", flipped, w, {**params, "rank": 5})
    np.testing.assert_allclose(B2 @ A2, B @ A, rtol=1e-9, atol=1e-12)


def test_lego_rank1_centroid_is_the_best_rank1_of_each_cluster_sum() -> None:
    """Each output unit is the leading singular pair of the summed updates of its cluster, and
    the clusters partition the units: the residual per cluster is what rank 1 cannot hold."""
    from merging.batch import MergeContext, build_batch
    from merging.methods import lego

    ads = adapters(4)
    name = next(iter(ads[0].modules))
    ctx = MergeContext(dtype=torch.float64)
    p = lego.LegoParams(rank=3, **RANK1)
    B, A = lego._prepare_units(build_batch(ads, [1.0] * 4, [name], ctx), p)
    labels = torch.tensor([[0, 1, 2, 0] * 4])
    Bc, Ac = lego._rank1_centroids(B, A, labels, 3)
    for c in range(3):
        idx = (labels[0] == c).nonzero().flatten()
        S = (B[0][:, idx] @ A[0][idx]).numpy()
        U, s, Vt = np.linalg.svd(S)
        got = np.outer(Bc[0][:, c].numpy(), Ac[0][c].numpy())
        np.testing.assert_allclose(got, s[0] * np.outer(U[:, 0], Vt[0]), atol=1e-10)


def test_lego_refuses_negative_weights() -> None:
    with pytest.raises(BadInputError) as exc:
        merge(adapters(2), [1.0, -1.0], "lego", {"rank": 4})
    assert exc.value.code == "weights_negative"


@pytest.mark.parametrize("gauge", ["svd", "raw"])
@pytest.mark.parametrize("centre", [True, False])
def test_rmm_exact_revert_when_basis_is_large_enough(gauge: str, centre: bool) -> None:
    ads = adapters(4, rank=6, layers=2)
    p = 3 if centre else 4
    res = merge(
        ads,
        [1] * 4,
        "rmm",
        {"basis": p, "gauge": gauge, "centre": centre},
        names=["a", "b", "c", "d"],
    )
    for i, label in enumerate("abcd"):
        back = revert(res.artifact, label)
        assert back.ranks == ads[i].ranks
        for name, m in back:
            ref = ads[i].modules[name].delta()
            np.testing.assert_allclose(m.delta(), ref, atol=1e-5 * np.abs(ref).max())
    assert res.report["reconstruction_error"]["max"] < 1e-5


def test_rmm_error_decreases_with_basis_and_zero_basis_reverts_to_the_mean() -> None:
    ads = adapters(5, rank=4)
    errs = [
        merge(ads, [1] * 5, "rmm", {"basis": p, "gauge": "raw"}).report["reconstruction_error"][
            "mean"
        ]
        for p in range(5)
    ]
    assert all(a >= b - 1e-9 for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 1e-5 < errs[0]
    res = merge(ads, [1] * 5, "rmm", {"basis": 0, "gauge": "raw"})
    name = next(iter(ads[0].modules))
    mean_B = np.mean([ad.modules[name].scale_folded()[0] for ad in ads], axis=0)
    np.testing.assert_allclose(revert(res.artifact, 2).modules[name].B, mean_B, atol=1e-6)


def test_rmm_storage_matches_the_formula() -> None:
    ads, n, r, p = adapters(8, rank=16), 8, 16, 3
    res = merge(ads, [1] * n, "rmm", {"basis": p})
    stored = sum(t.size for t in res.artifact.tensors.values())
    expected = sum(storage_params(m.out_features, m.in_features, r, n, p) for _, m in ads[0])
    assert stored == expected
    members = n * sum(m.num_parameters for _, m in ads[0])
    assert stored / members == pytest.approx((p * (r + n) + r) / (r * n))  # 0.6875 (§4.2)


def test_an_uncentred_basis_stores_no_mean_and_older_artifacts_with_zeros_still_revert() -> None:
    ads, n, r, p = adapters(3, rank=4), 3, 4, 2
    res = merge(ads, [1] * n, "rmm", {"basis": p, "centre": False})
    assert not [k for k in res.artifact.tensors if k.endswith("_mu")]
    stored = sum(t.size for t in res.artifact.tensors.values())
    assert stored == sum(
        storage_params(m.out_features, m.in_features, r, n, p, centre=False) for _, m in ads[0]
    )
    old = dict(res.artifact.tensors)  # as written before: an all-zero mean per side
    for key in [k for k in res.artifact.tensors if k.endswith("_basis")]:
        old[key.replace("_basis", "_mu")] = np.zeros(old[key].shape[:-1], np.float32)
    for member in range(n):
        now, then = revert(res.artifact, member), revert(replace(res.artifact, tensors=old), member)
        for name, m in now:
            np.testing.assert_array_equal(m.delta(), then.modules[name].delta())
    centred = merge(ads, [1] * n, "rmm", {"basis": p})
    broken = {k: v for k, v in centred.artifact.tensors.items() if not k.endswith("A_mu")}
    with pytest.raises(BadInputError) as exc:  # a centred basis cannot do without its mean
        revert(replace(centred.artifact, tensors=broken), 0)
    assert exc.value.code == "rmm_artifact_invalid"


def test_rmm_unequal_ranks_pad_and_trim() -> None:
    ads = adapters(2, rank=4) + adapters(1, rank=6)
    res = merge(ads, [1, 1, 1], "rmm")
    back = revert(res.artifact, 2)
    assert set(back.ranks.values()) == {6}
    for name, m in back:
        np.testing.assert_allclose(m.delta(), ads[2].modules[name].delta(), atol=1e-5)


@pytest.mark.parametrize(("member", "code"), [(5, "rmm_not_a_member"), ("zz", "rmm_not_a_member")])
def test_rmm_revert_of_a_non_member_is_refused(member: object, code: str) -> None:
    res = merge(adapters(2), [1, 1], "rmm", names=["x", "y"])
    with pytest.raises(BadInputError) as exc:
        revert(res.artifact, member)
    assert exc.value.code == code


def test_rmm_basis_larger_than_possible_is_refused() -> None:
    with pytest.raises(BadInputError) as exc:
        merge(adapters(3, rank=4), [1, 1, 1], "rmm", {"basis": 4})
    assert exc.value.code == "basis_too_large"
