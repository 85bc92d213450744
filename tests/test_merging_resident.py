"""Device-resident merges (``merging.resident``): staged once, merged many times, every result
equal to ``merge``'s, the same refusals, and the staged factors never altered by a merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hub.core.errors import BadInputError, HubError
from hub.core.lora import LoraAdapter, LoraModule
from merging import merge
from merging.resident import merge_staged, stage
from merging.synthetic import random_adapter
from tests.test_merging_methods import METHODS, SHAPES, TYPICAL_PARAMS, adapters


def _same(got: LoraAdapter, want: LoraAdapter, rtol: float = 1e-6) -> None:
    assert set(got.modules) == set(want.modules)
    for name, mod in want:
        g = got.modules[name]
        assert g.A.shape == mod.A.shape and g.alpha == mod.alpha, name
        ref = mod.delta(np.float64)
        assert np.linalg.norm(g.delta(np.float64) - ref) <= rtol * np.linalg.norm(ref), name


@pytest.mark.parametrize("method", METHODS)
def test_every_method_equals_merge_and_leaves_the_staged_inputs_untouched(method: str) -> None:
    ads = adapters(3, rank=4, layers=2, decay=0.2)
    params = TYPICAL_PARAMS.get(method, {})
    staged = stage(ads, device="cpu", names=["a", "b", "c"])
    before = [(g.A.clone(), g.B.clone()) for g in staged.groups]
    for w in ([0.5, 0.3, 0.2], [1.0, 0.25, 0.75]):  # two merges over one staging
        want = merge(ads, w, method, params, device="cpu", seed=3)
        got = merge_staged(staged, w, method, params, seed=3)
        _same(got.to_adapter(), want.adapter)
        assert got.report["per_module_ranks"] == want.report["per_module_ranks"]
        assert got.report["fast_path_fallbacks"] == want.report["fast_path_fallbacks"]
        if want.report["reconstruction_error"]:
            e_got = got.report["reconstruction_error"]["per_module"]
            e_want = want.report["reconstruction_error"]["per_module"]
            assert e_got == pytest.approx(e_want, rel=1e-5, abs=1e-7)
        if want.artifact is not None:
            assert set(got.artifact) == set(want.artifact.tensors)
            for key, t in want.artifact.tensors.items():
                np.testing.assert_allclose(got.artifact[key].float().numpy(), t, rtol=1e-5)
    for g, (A, B) in zip(staged.groups, before, strict=True):
        assert torch.equal(g.A, A) and torch.equal(g.B, B)


def test_staging_groups_equal_shapes_and_the_result_stays_on_the_device() -> None:
    ads = adapters(4, rank=4, layers=3)
    staged = stage(ads, device="cpu")
    n_modules = sum(len(g.names) for g in staged.groups)
    assert n_modules == len(ads[0].modules)
    assert len(staged.groups) == len({(g.A.shape[1:], g.B.shape[1:]) for g in staged.groups})
    assert staged.nbytes == 4 * sum(m.num_parameters for ad in ads for _, m in ad)
    out = merge_staged(staged, [0.25] * 4, "cat")
    B, A = next(iter(out.modules.values()))
    assert isinstance(B, torch.Tensor) and A.shape[0] == 16 and out.report["resident"]


def test_module_policy_applies_per_merge() -> None:
    full = random_adapter(SHAPES, layers=1, rank=4, seed=1)
    names = sorted(full.modules)
    part = LoraAdapter(base=full.base, modules={n: full.modules[n] for n in names[:3]})
    other = random_adapter(SHAPES, layers=1, rank=4, seed=2)
    staged = stage([full, part, other], device="cpu", names=["full", "part", "other"])
    with pytest.raises(BadInputError) as err:
        merge_staged(staged, [1, 1, 1], "cat")
    assert err.value.code == "module_set_mismatch"
    got = merge_staged(staged, [1, 1, 1], "cat", {"modules": "intersection"})
    want = merge([full, part, other], [1, 1, 1], "cat", {"modules": "intersection"})
    _same(got.to_adapter(), want.adapter)
    assert got.report["modules_skipped"] == names[3:]
    # union: modules present in only some inputs merge over those present, as merge does
    got = merge_staged(staged, [1, 0.5, 1], "svd", {"modules": "union", "rank": 4})
    want = merge([full, part, other], [1, 0.5, 1], "svd", {"modules": "union", "rank": 4})
    _same(got.to_adapter(), want.adapter, rtol=1e-5)


@pytest.mark.parametrize(
    ("weights", "method", "params", "code"),
    [
        ([1.0, 1.0], "cat", {}, "weights_count_mismatch"),
        ([1.0, float("nan"), 1.0], "cat", {}, "weights_not_finite"),
        ([1.0, -1.0, 1.0], "lego", {"rank": 4}, "weights_negative"),
        ([1.0, 1.0, 1.0], "svd", {"rank": 13}, "target_rank_too_large"),
        ([1.0, 1.0, 1.0], "nope", {}, "unknown_method"),
    ],
)
def test_bad_requests_are_refused_with_merge_codes(weights, method, params, code) -> None:
    ads = adapters(3, rank=4)
    staged = stage(ads, device="cpu")
    with pytest.raises(BadInputError) as got:
        merge_staged(staged, weights, method, params)
    with pytest.raises(BadInputError) as want:
        merge(ads, weights, method, params, device="cpu")
    assert got.value.code == want.value.code == code


def test_bad_inputs_are_refused_at_staging() -> None:
    ads = adapters(2, rank=4)
    with pytest.raises(BadInputError) as err:
        stage(ads[:1], device="cpu")
    assert err.value.code == "merge_too_few_adapters"
    other_base = random_adapter(SHAPES, layers=1, rank=4, seed=9, base="another-model")
    with pytest.raises(HubError) as err:
        stage([ads[0], other_base], device="cpu")
    assert err.value.code == "base_model_mismatch"
    name = next(iter(ads[0].modules))
    wide = LoraAdapter(
        base=ads[0].base,
        modules={
            name: LoraModule(
                A=np.ones((4, 7), np.float32), B=np.ones((5, 4), np.float32), alpha=4.0
            )
        },
    )
    with pytest.raises(BadInputError) as err:
        stage([ads[0], wide], device="cpu")
    assert err.value.code == "module_shape_mismatch"
    with pytest.raises(BadInputError) as err:
        stage(ads, device="tpu")
    assert err.value.code == "bad_device"


def test_non_finite_output_is_refused() -> None:
    ads = adapters(2, rank=4)
    name = next(iter(ads[0].modules))
    bad = ads[1].modules[name].A.copy()
    bad[0, 0] = np.inf
    ads[1] = LoraAdapter(
        base=ads[1].base,
        modules={**ads[1].modules, name: LoraModule(A=bad, B=ads[1].modules[name].B, alpha=4.0)},
    )
    with pytest.raises(HubError) as err:
        merge_staged(stage(ads, device="cpu"), [0.5, 0.5], "cat")
    assert err.value.code == "merge_not_finite"


@pytest.mark.parametrize("method", ["ties_svd", "lego"])
def test_progress_is_reported_as_merge_reports_it(method: str) -> None:
    ads = adapters(3, rank=4, layers=2)
    params = {"rank": 4, **({"density": 0.5} if method == "ties_svd" else {})}
    seen: list[tuple[int, int]] = []
    want: list[tuple[int, int]] = []
    staged = stage(ads, device="cpu")
    merge_staged(staged, [1, 1, 1], method, params, progress=lambda d, t: seen.append((d, t)))
    merge(ads, [1, 1, 1], method, params, device="cpu", progress=lambda d, t: want.append((d, t)))
    total = len(ads[0].modules)
    assert seen == want and seen[-1] == (total, total) and len(seen) > 1
