"""SG-LoRA's exact properties (ALGORITHMS.md §2.5) and the gauge-invariant expert space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generation.sglora import (
    ExpertSpace,
    FlatLayout,
    aggregate,
    cosine,
    softmax_weights,
    top_k,
)
from generation.sglora.cvae import (
    COND_FEATURES,
    ConditionRows,
    CoordinateCvae,
    CvaeConfig,
    gaussian_kl,
)
from generation.sglora.space import module_gram
from hub.core.errors import BadInputError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule

RNG = np.random.default_rng


def stats(n=6, d=10, seed=0):
    rng = RNG(seed)
    return rng.standard_normal((n, d)), rng.uniform(0.1, 2.0, (n, d)), rng.uniform(-1, 1, n)


def adapter(seed, ranks=(2, 3), shapes=((8, 6), (4, 6)), alpha=4.0):
    rng = RNG(seed)
    modules = {}
    for i, ((d_out, d_in), r) in enumerate(zip(shapes, ranks, strict=True)):
        modules[f"model.layers.{i}.proj"] = LoraModule(
            A=rng.standard_normal((r, d_in)), B=rng.standard_normal((d_out, r)), alpha=alpha
        )
    return LoraAdapter(base=BaseModelRef("tiny"), modules=modules)


# -- the aggregator ------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 4, 6])
@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0, 10.0])
def test_weights_are_a_distribution_over_the_top_k(k, tau):
    mu, var, sims = stats()
    agg = aggregate(sims, mu, var, k=k, tau=tau)
    assert agg.weights.shape == (k,) and np.all(agg.weights > 0)
    assert agg.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert list(agg.indices) == list(np.argsort(-sims)[:k])
    assert np.all(np.diff(agg.similarities) <= 0)


def test_k1_returns_the_best_expert_statistics_exactly():
    mu, var, sims = stats()
    best = int(np.argmax(sims))
    agg = aggregate(sims, mu, var, k=1, tau=0.3)
    np.testing.assert_array_equal(agg.mean, mu[best])
    np.testing.assert_array_equal(agg.var, var[best])


def test_identical_means_leave_only_the_within_expert_variance():
    mu, var, sims = stats()
    same = np.tile(mu[0], (len(mu), 1))
    agg = aggregate(sims, same, var, k=4, tau=0.2)
    np.testing.assert_allclose(agg.var, agg.weights @ var[agg.indices], rtol=0, atol=1e-12)
    np.testing.assert_allclose(agg.mean, mu[0], atol=1e-12)


def test_law_of_total_variance_matches_a_sampled_mixture():
    mu, var, sims = stats(n=5, d=4, seed=3)
    agg = aggregate(sims, mu, var, k=3, tau=0.5)
    rng = RNG(11)
    n = 400_000
    pick = rng.choice(agg.indices, size=n, p=agg.weights)
    draws = mu[pick] + np.sqrt(var[pick]) * rng.standard_normal((n, 4))
    np.testing.assert_allclose(draws.mean(0), agg.mean, atol=0.01)
    np.testing.assert_allclose(draws.var(0), agg.var, rtol=0.02)


def test_tau_to_zero_is_nearest_expert_retrieval():
    mu, var, sims = stats(seed=5)
    best = int(np.argmax(sims))
    agg = aggregate(sims, mu, var, k=4, tau=1e-6)
    assert agg.indices[0] == best
    np.testing.assert_allclose(agg.weights, [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(agg.mean, mu[best], atol=1e-9)
    np.testing.assert_allclose(agg.var, var[best], atol=1e-9)


def test_ties_break_deterministically_by_lower_index():
    sims = np.array([0.2, 0.9, 0.5, 0.9, 0.9])
    assert list(top_k(sims, 3)) == [1, 3, 4]
    w = softmax_weights(sims[[1, 3]], 1e-9)
    np.testing.assert_allclose(w, [0.5, 0.5])


def test_aggregator_bad_input():
    mu, var, sims = stats()
    with pytest.raises(BadInputError, match="k must be"):
        aggregate(sims, mu, var, k=7, tau=0.1)
    with pytest.raises(BadInputError, match="k must be"):
        aggregate(sims, mu, var, k=0, tau=0.1)
    with pytest.raises(BadInputError, match="tau"):
        aggregate(sims, mu, var, k=2, tau=0.0)
    assert cosine(np.zeros(3), np.eye(3)).tolist() == [0.0, 0.0, 0.0]


# -- flattening ----------------------------------------------------------------------------------
def test_flatten_unflatten_of_lora_tensors_is_bit_exact():
    a = adapter(1)
    arrays = {}
    for name, m in a.modules.items():
        arrays[f"{name}.lora_A"] = m.A.astype(np.float32)
        arrays[f"{name}.lora_B"] = m.B.astype(np.float16)
    layout = FlatLayout.of(arrays)
    flat = layout.flatten(arrays)
    assert flat.shape == (sum(x.size for x in arrays.values()),)
    back = layout.unflatten(flat)
    for key, value in arrays.items():
        restored = back[key].astype(value.dtype)
        assert restored.shape == value.shape
        assert restored.tobytes() == value.tobytes()
    with pytest.raises(ValueError):
        layout.unflatten(flat[:-1])


# -- the gauge-invariant expert space ------------------------------------------------------------
def dense(a: LoraAdapter, name: str) -> np.ndarray:
    return a.modules[name].delta()


def test_gram_equals_dense_inner_products_and_coordinates_are_isometric():
    experts = [adapter(s, ranks=(1 + s % 3, 2)) for s in range(5)]
    space = ExpertSpace.fit(experts)
    vec = space.expert_vectors()
    for name in space.modules:
        deltas = [dense(e, name) for e in experts]
        gram = np.array([[np.sum(x * y) for y in deltas] for x in deltas])
        factors = [e.modules[name].scale_folded() for e in experts]
        got = module_gram([(b.astype(np.float64), a.astype(np.float64)) for b, a in factors])
        np.testing.assert_allclose(got, gram, rtol=1e-5, atol=1e-6)
    flat_deltas = [np.concatenate([dense(e, n).ravel() for n in space.modules]) for e in experts]
    for i in range(5):
        for j in range(5):
            expected = np.linalg.norm(flat_deltas[i] - flat_deltas[j])
            assert np.linalg.norm(vec[i] - vec[j]) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_coordinates_are_gauge_invariant_and_lift_back_to_the_expert():
    experts = [adapter(s) for s in range(4)]
    rng = RNG(9)
    moved = []
    for e in experts:
        mods = {}
        for name, m in e.modules.items():
            M = rng.standard_normal((m.rank, m.rank)) + 3 * np.eye(m.rank)
            mods[name] = LoraModule(A=np.linalg.solve(M, m.A), B=m.B @ M, alpha=m.alpha)
        moved.append(LoraAdapter(base=e.base, modules=mods))
    a, b = ExpertSpace.fit(experts), ExpertSpace.fit(moved)
    np.testing.assert_allclose(a.expert_vectors(), b.expert_vectors(), rtol=1e-4, atol=1e-4)
    for i, row in enumerate(a.expert_vectors()):
        for w in a.expert_weights(row).values():
            np.testing.assert_allclose(w, np.eye(4)[i], atol=1e-8)


def test_a_module_missing_from_an_expert_is_a_zero_update():
    full, partial = adapter(1), adapter(2)
    only_one = LoraAdapter(base=partial.base, modules=dict(list(partial.modules.items())[:1]))
    space = ExpertSpace.fit([full, only_one])
    second = space.layout.unflatten(space.expert_vectors()[1])
    assert np.allclose(second[space.modules[1]], 0.0)


# -- the CVAE --------------------------------------------------------------------------------------
def test_kl_is_non_negative_and_zero_for_equal_gaussians():
    g = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(50, 7, generator=g) for _ in range(4))
    assert bool((gaussian_kl(mu_q, lv_q, mu_p, lv_p) >= 0).all())
    assert gaussian_kl(mu_q, lv_q, mu_q, lv_q).abs().max() < 1e-6


def rows(n=7, modules=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, COND_FEATURES, generator=g)
    features[:, 1] = features[:, 1].abs()
    return ConditionRows(features, torch.randint(0, modules, (n,), generator=g))


def test_cvae_sampling_is_seeded_and_the_prior_mean_is_deterministic():
    torch.manual_seed(0)
    cvae = CoordinateCvae(CvaeConfig(modules=3, hidden=16, latent=2))
    for p in cvae.decoder.parameters():  # a non-zero decoder, so samples differ from the mean
        torch.nn.init.normal_(p, std=0.3)
    cond = rows()

    def draw(seed, samples):
        return cvae.sample(cond, samples, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7, 4), draw(7, 4))
    assert not torch.equal(draw(7, 4), draw(8, 4))
    assert torch.equal(draw(1, 0), draw(2, 0))
    assert draw(1, 0).shape == (1, 7) and draw(1, 4).shape == (4, 7)
    total, recon, kl = cvae.loss(torch.randn(7), cond, torch.Generator().manual_seed(0))
    assert kl.item() >= 0 and total.item() == pytest.approx(recon.item() + kl.item(), rel=1e-6)


def test_an_untrained_decoder_reproduces_the_aggregated_mean():
    cvae = CoordinateCvae(CvaeConfig(modules=3))
    cond = rows()
    out = cvae.sample(cond, 5, torch.Generator().manual_seed(0))
    assert torch.allclose(out, cond.mu.expand_as(out))
