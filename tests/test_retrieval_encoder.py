"""Weight encoder: trains (loss falls), is deterministic, round-trips as a safetensors artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hub.core.errors import HubError
from retrieval.embedders import HashEmbedder
from retrieval.weight_encoder import (
    LeastSquaresMap,
    TrainConfig,
    WeightEncoder,
    train_encoder,
)
from retrieval.weight_features import FeatureSpec
from tests.test_retrieval_features import adapter

THEMES = ["reverse the letters of a word", "add two numbers", "translate colours to french"]
SPEC = FeatureSpec(n_probes=16)
CFG = TrainConfig(steps=100, lr=1e-2, dropout=0.1, seed=3)


@pytest.fixture(scope="module")
def data():
    """Adapters of 3 'themes': same-theme deltas share a component, captions share words."""
    emb = HashEmbedder()
    adapters, texts = [], []
    for i in range(12):
        theme = i % 3
        a = adapter(r=4 + 4 * (i % 2), seed=100 + i)
        anchor = adapter(r=4, seed=theme)  # the theme's shared direction
        mods = {
            n: type(m)(
                np.vstack([m.A * 0.3, anchor.modules[n].A]),
                np.hstack([m.B * 0.3, anchor.modules[n].B]),
                m.alpha,
            )
            for n, m in a.modules.items()
        }
        adapters.append(type(a)(a.base, mods))
        texts.append(
            emb.embed([f"{THEMES[theme]} number {i}", f"{THEMES[theme]} {i}", f"task {i}"])
        )
    return adapters, texts, emb.embedder_id


@pytest.fixture(scope="module")
def trained(data):
    adapters, texts, eid = data
    return train_encoder(adapters, texts, eid, SPEC, CFG)


def test_training_reduces_loss(trained):
    _, losses = trained
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])


def test_training_is_deterministic(data, trained):
    adapters, texts, eid = data
    again, _ = train_encoder(adapters, texts, eid, SPEC, CFG)
    enc, _ = trained
    assert again.version == enc.version
    np.testing.assert_array_equal(again.embed_many(adapters), enc.embed_many(adapters))


def test_embeddings_are_unit_and_themed(data, trained):
    adapters, _, _ = data
    enc, _ = trained
    e = enc.embed_many(adapters)
    assert e.shape == (12, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sims = e @ e.T
    same = np.equal.outer(np.arange(12) % 3, np.arange(12) % 3) & ~np.eye(12, dtype=bool)
    assert sims[same].mean() > sims[~same].mean() + 0.2


def test_round_trip_identical(tmp_path, data, trained):
    adapters, _, _ = data
    enc, _ = trained
    enc.save(tmp_path / "enc")
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [
        "encoder.json",
        "encoder.safetensors",
    ]
    back = WeightEncoder.load(tmp_path / "enc")
    assert back.version == enc.version and back.embedder_id == enc.embedder_id
    np.testing.assert_array_equal(back.embed_many(adapters), enc.embed_many(adapters))


def test_embeds_adapter_of_other_rank_and_modules(trained):
    enc, _ = trained
    v = enc.embed(adapter(r=16, seed=999, targets=("q_proj",)))
    assert v.shape == (384,) and np.isfinite(v).all()


def test_tampered_artifact_refused(tmp_path, trained):
    enc, _ = trained
    enc.save(tmp_path / "enc")
    cfg = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    cfg["train"]["temperature"] = 0.5
    (tmp_path / "enc" / "encoder.json").write_text(json.dumps(cfg))
    with pytest.raises(HubError, match="hash"):
        WeightEncoder.load(tmp_path / "enc")
    with pytest.raises(HubError, match="encoder train"):
        WeightEncoder.load(tmp_path / "missing")


def test_least_squares_baseline_fits_training_pairs(data, trained):
    adapters, texts, _ = data
    enc, _ = trained
    x = np.stack([enc.features(a) for a in adapters])
    y = np.stack([t[2] for t in texts])  # "task i": distinct per adapter
    pred = LeastSquaresMap(lam=1e-3).fit(x, y).transform(x)
    assert (np.argmax(pred @ y.T, axis=1) == np.arange(12)).mean() > 0.9
