"""Weight features depend on delta only: rank permutation, gauge and zero-padding invariant."""

from __future__ import annotations

import numpy as np
import pytest

from hub.core.errors import BadInputError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from retrieval.weight_features import (
    FeatureSpec,
    SlotLayout,
    adapter_features,
    slot_key,
    thin_svd,
)

SHAPES = {"q_proj": (48, 48), "v_proj": (48, 16)}  # (d_in, d_out)
SPEC = FeatureSpec(top_k=8, n_probes=16, use_sv=True)


def adapter(r=4, seed=0, targets=("q_proj", "v_proj"), layers=2, transform=None) -> LoraAdapter:
    rng = np.random.default_rng(seed)
    trng = np.random.default_rng(seed + 10_000)  # own stream: transforms must not shift rng
    mods = {}
    for i in range(layers):
        for t in targets:
            d_in, d_out = SHAPES[t]
            A, B = rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r))
            if transform is not None:
                B, A = transform(B, A, trng)
            mods[f"model.layers.{i}.self_attn.{t}"] = LoraModule(A, B, alpha=2.0 * r)
    return LoraAdapter(BaseModelRef("tiny"), mods)


LAYOUT = SlotLayout.from_adapters([adapter()])


def feats(a: LoraAdapter):
    return adapter_features(a, LAYOUT, SPEC)


def test_thin_svd_matches_dense_delta():
    m = adapter().modules["model.layers.0.self_attn.q_proj"]
    u, s, v = thin_svd(m)
    np.testing.assert_allclose(u @ np.diag(s) @ v.T, m.delta(), atol=1e-10)
    np.testing.assert_allclose(s, np.linalg.svd(m.delta(), compute_uv=False)[:4], rtol=1e-10)


def test_rank_permutation_invariance():
    def permute(B, A, rng):
        p = rng.permutation(A.shape[0])
        return B[:, p], A[p]

    base, perm = feats(adapter(seed=1)), feats(adapter(seed=1, transform=permute))
    np.testing.assert_allclose(base.slots, perm.slots, atol=1e-5)


def test_gauge_invariance():
    def gauge(B, A, rng):
        M = rng.standard_normal((A.shape[0], A.shape[0])) + 3 * np.eye(A.shape[0])
        return B @ M, np.linalg.solve(M, A)  # (B M, M^-1 A)

    base, gauged = feats(adapter(seed=2)), feats(adapter(seed=2, transform=gauge))
    np.testing.assert_allclose(base.slots, gauged.slots, atol=1e-5)
    assert base.log_norm == pytest.approx(gauged.log_norm, abs=1e-6)


def test_zero_padding_rank_invariance():
    """Rank 4 zero-padded to rank 8, alpha raised so the scale s = alpha/r is unchanged."""
    a4 = adapter(r=4, seed=3)
    mods = {}
    for name, m in a4.modules.items():
        A = np.vstack([m.A, np.zeros_like(m.A)])
        B = np.hstack([m.B, np.zeros_like(m.B)])
        mods[name] = LoraModule(A, B, alpha=m.alpha * 2)
    a8 = LoraAdapter(a4.base, mods)
    np.testing.assert_allclose(feats(a4).slots, feats(a8).slots, atol=1e-5)


def test_different_ranks_give_same_shape():
    shapes = {feats(adapter(r=r, seed=r)).slots.shape for r in (2, 4, 8, 16)}
    assert shapes == {(len(LAYOUT.slots), SPEC.slot_dim)}


def test_missing_modules_are_zero_and_masked():
    only_q = adapter(targets=("q_proj",))
    f = feats(only_q)
    v_rows = [i for i, k in enumerate(LAYOUT.slots) if k.endswith("v_proj")]
    assert (f.mask[v_rows] == 0).all() and (f.slots[v_rows] == 0).all()
    assert f.mask.sum() == 2


def test_unrelated_modules_refused():
    layout = SlotLayout(("0.k_proj",))
    with pytest.raises(BadInputError, match="layout"):
        adapter_features(adapter(), layout, SPEC)


def test_features_are_deterministic_and_scale_normalised():
    a = adapter(seed=4)
    np.testing.assert_array_equal(feats(a).flat(), feats(a).flat())
    # doubling alpha doubles delta: normalised rows stay, the log-norm moves by log 2
    big = LoraAdapter(a.base, {n: LoraModule(m.A, m.B, m.alpha * 2) for n, m in a.modules.items()})
    np.testing.assert_allclose(feats(big).slots, feats(a).slots, atol=1e-5)
    assert feats(big).log_norm - feats(a).log_norm == pytest.approx(np.log(2), abs=1e-6)


def test_slot_key_parsing():
    assert slot_key("model.layers.12.self_attn.q_proj") == "12.q_proj"
    assert slot_key("transformer.h.3.attn.c_attn") == "3.c_attn"
    assert slot_key("lm_head") == "-1.lm_head"
