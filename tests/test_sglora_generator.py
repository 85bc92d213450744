"""The SG-LoRA generator end to end without a catalog: behaviour on a synthetic task manifold
(ALGORITHMS.md §2.5), seeded reproducibility, the artifact round trip and the realized LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generation.sglora import (
    ExpertInfo,
    GeneratorSettings,
    SgLoraGenerator,
    read_artifact_doc,
    train_generator,
    version_of,
)
from hub.core.errors import BadInputError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from hub.services.generation_lowrank import realize

SHAPES = {"model.layers.0.self_attn.q_proj": (16, 12), "model.layers.1.self_attn.v_proj": (8, 12)}
N_TASKS, EMB, HELD_OUT = 36, 6, range(30, 36)


def to_lora(deltas: dict[str, np.ndarray], r: int) -> LoraAdapter:
    """A rank-r LoRA of each delta (SVD split unevenly on purpose: a gauge of its own)."""
    modules = {}
    for name, d in deltas.items():
        u, s, vt = np.linalg.svd(d)
        modules[name] = LoraModule(A=vt[:r] * 2.0, B=u[:, :r] * s[:r] / 4.0, alpha=2.0 * r)
    return LoraAdapter(base=BaseModelRef("synthetic"), modules=modules)


@pytest.fixture(scope="module")
def manifold():
    """Tasks whose update is a smooth function of their description embedding:
    ``dW(e) = sum_j e_j W_j + noise``, as LoRAs of mixed ranks."""
    rng = np.random.default_rng(0)
    basis = {
        m: [rng.standard_normal((o, 2)) @ rng.standard_normal((2, i)) for _ in range(EMB)]
        for m, (o, i) in SHAPES.items()
    }
    emb = rng.standard_normal((N_TASKS, EMB))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    adapters = []
    for t in range(N_TASKS):
        deltas = {
            m: sum(emb[t, j] * basis[m][j] for j in range(EMB))
            + 0.3 * rng.standard_normal(SHAPES[m])
            for m in SHAPES
        }
        adapters.append(to_lora(deltas, r=(4, 6, 8)[t % 3]))
    queries = [
        np.stack([emb[t] + 0.15 * rng.standard_normal(EMB) for _ in range(3)])
        for t in range(N_TASKS)
    ]
    return adapters, emb, queries


def train_on(manifold, train_ids, **overrides):
    adapters, emb, queries = manifold
    settings = GeneratorSettings(**{"steps": 200, "batch_rows": 4096, **overrides})
    return train_generator(
        [adapters[i] for i in train_ids],
        [ExpertInfo(f"task{i}", 1, f"{i:064x}", f"task {i}") for i in train_ids],
        emb[train_ids],
        [queries[i] for i in train_ids],
        base_model="synthetic",
        text_embedder_id="test/6",
        settings=settings,
    )


@pytest.fixture(scope="module")
def generator(manifold):
    return train_on(manifold, list(range(30)))


def dense(adapter: LoraAdapter) -> dict[str, np.ndarray]:
    return {n: m.delta() for n, m in adapter.modules.items()}


def combination(experts, weights):
    return {
        m: sum(w * dense(e)[m] for e, w in zip(experts, weights[m], strict=True)) for m in SHAPES
    }


def rel_error(pred, truth) -> float:
    num = sum(((pred[m] - truth[m]) ** 2).sum() for m in SHAPES)
    return float(num / sum((truth[m] ** 2).sum() for m in SHAPES))


def test_generated_updates_beat_uniform_nearest_and_weighted_averages(manifold, generator):
    adapters, _, queries = manifold
    experts = adapters[:30]
    errors: dict[str, list[float]] = {"sg": [], "uniform": [], "nearest": [], "weighted": []}
    for t in HELD_OUT:
        truth = dense(adapters[t])
        out = generator.generate(queries[t][0], k=4, tau=0.05, samples=16, seed=0)
        errors["sg"].append(rel_error(combination(experts, out.weights), truth))
        agg = out.aggregate
        for label, idx, w in [
            ("uniform", np.arange(30), np.full(30, 1 / 30)),
            ("nearest", agg.indices[:1], [1.0]),
            ("weighted", agg.indices, agg.weights),
        ]:
            weights = np.zeros(30)
            weights[idx] = w
            errors[label].append(
                rel_error(combination(experts, dict.fromkeys(SHAPES, weights)), truth)
            )
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    assert mean["sg"] < mean["uniform"], mean
    assert mean["sg"] < mean["nearest"], mean
    assert mean["sg"] < mean["weighted"], mean


def test_generation_is_seeded_and_the_prior_mean_is_deterministic(manifold, generator):
    q = manifold[2][31][0]
    a = generator.generate(q, k=3, tau=0.1, samples=4, seed=5)
    b = generator.generate(q, k=3, tau=0.1, samples=4, seed=5)
    c = generator.generate(q, k=3, tau=0.1, samples=4, seed=6)
    assert np.array_equal(a.coordinates, b.coordinates)
    assert not np.array_equal(a.coordinates, c.coordinates)
    d0 = generator.generate(q, k=3, tau=0.1, samples=0, seed=1)
    d1 = generator.generate(q, k=3, tau=0.1, samples=0, seed=2)
    assert np.array_equal(d0.coordinates, d1.coordinates)
    with pytest.raises(BadInputError, match="k = 31"):
        generator.generate(q, k=31, tau=0.1, samples=1, seed=0)


def test_training_is_seeded(manifold):
    a = train_on(manifold, list(range(8)), steps=20)
    b = train_on(manifold, list(range(8)), steps=20)
    assert a.to_bytes() == b.to_bytes()
    c = train_on(manifold, list(range(8)), steps=20, seed=1)
    assert version_of(c.to_bytes()) != version_of(a.to_bytes())


def test_artifact_round_trip_is_exact(manifold, generator):
    data = generator.to_bytes()
    assert read_artifact_doc(data)["experts"][0]["name"] == "task0"
    back = SgLoraGenerator.from_bytes(data)
    assert back.to_bytes() == data
    q = manifold[2][33][1]
    x = generator.generate(q, k=4, tau=0.05, samples=3, seed=9)
    y = back.generate(q, k=4, tau=0.05, samples=3, seed=9)
    for name in SHAPES:
        assert np.array_equal(x.weights[name], y.weights[name])
    with pytest.raises(BadInputError, match="not a loradex"):
        read_artifact_doc(b"\x00" * 16)


def test_realized_lora_is_the_best_rank_k_approximation(manifold, generator):
    adapters = manifold[0][:30]
    out = generator.generate(manifold[2][30][0], k=4, tau=0.05, samples=2, seed=0)
    target = combination(adapters, out.weights)
    for rank in (3, 16):
        lora = realize(out.weights, adapters, rank)
        for name, (d_out, d_in) in SHAPES.items():
            module = lora.modules[name]
            assert module.A.shape == (rank, d_in) and module.B.shape == (d_out, rank)
            assert module.A.dtype == np.float32 and module.B.dtype == np.float32
            s = np.linalg.svd(target[name], compute_uv=False)
            best = np.sqrt((s[rank:] ** 2).sum())
            got = np.linalg.norm(module.delta() - target[name])
            assert got == pytest.approx(best, rel=1e-3, abs=1e-4 * s[0])


def test_too_few_experts_is_refused(manifold):
    with pytest.raises(BadInputError, match="at least 2"):
        train_on(manifold, [0])


def test_training_leaves_torch_threads_alone(manifold):
    before = torch.get_num_threads()
    train_on(manifold, list(range(4)), steps=2)
    assert torch.get_num_threads() == before
