"""Parity with PEFT ``add_weighted_adapter`` on a tiny Llama (hidden 64, 2 layers).

Every PEFT combination type: our merged delta equals PEFT's within 1e-5. DARE draws its masks
from torch's global RNG in PEFT; we record PEFT's masks and feed the same ones to our
per-module generator hook (``merging.methods.peft_ops.bernoulli_mask``), so DARE is compared
exactly too. Deliberate deviation, tested: PEFT 0.21 gives the merged adapter the *first*
input's ``use_rslora``, inflating it by sqrt(new rank); we always output scaling 1.
PEFT's old svd double scaling (``w_i s_i`` times a delta that already holds ``s_i``, fixed by
PR #3111) is absent from the installed 0.21.2: the svd cases below use alpha != r (scalings 2,
4 and 1), so they would fail against a PEFT that still had it.
"""

from __future__ import annotations

import numpy as np
import peft
import pytest
import torch
from peft.tuners.lora import LoraLayer

from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from merging import get_method, merge
from merging.batch import MergeContext, build_batch
from merging.methods import peft_ops
from tests.factories import tiny_llama

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALPHAS = [8, 16, 4]
WEIGHTS = [1.0, 0.7, -0.4]
PREFIX = "base_model.model."


def _tiny_peft(use_rslora: bool = False):  # noqa: ANN202
    base = tiny_llama()
    model = None
    for i, alpha in enumerate(ALPHAS):
        lcfg = peft.LoraConfig(
            r=4,
            lora_alpha=alpha,
            target_modules=TARGETS,
            init_lora_weights=False,
            use_rslora=use_rslora and i == 0,
        )
        if model is None:
            model = peft.get_peft_model(base, lcfg, adapter_name="a0")
        else:
            model.add_adapter(f"a{i}", lcfg)
    return model


def _layers(model) -> dict[str, LoraLayer]:  # noqa: ANN001
    return {k.removeprefix(PREFIX): m for k, m in model.named_modules() if isinstance(m, LoraLayer)}


def _to_hub(model, adapter: str) -> LoraAdapter:  # noqa: ANN001
    cfg = model.peft_config[adapter]
    mods = {
        name: LoraModule(
            A=layer.lora_A[adapter].weight.detach().numpy().copy(),
            B=layer.lora_B[adapter].weight.detach().numpy().copy(),
            alpha=float(cfg.lora_alpha),
            use_rslora=cfg.use_rslora,
        )
        for name, layer in _layers(model).items()
    }
    return LoraAdapter(base=BaseModelRef("tiny-llama"), modules=mods)


@pytest.fixture(scope="module")
def tiny():  # noqa: ANN201
    model = _tiny_peft()
    ads = [_to_hub(model, f"a{i}") for i in range(3)]
    for ad, i in zip(ads, range(3), strict=True):  # our scaling agrees with PEFT's
        for name, layer in _layers(model).items():
            assert ad.modules[name].scaling == pytest.approx(layer.scaling[f"a{i}"])
    return model, ads


CASES = [
    ("linear", {}, {}),
    ("cat", {}, {}),
    ("svd", {}, {}),
    ("svd", {"svd_rank": 7}, {"rank": 7}),
    ("ties", {"density": 0.5}, {"density": 0.5}),
    (
        "ties",
        {"density": 0.3, "majority_sign_method": "frequency"},
        {"density": 0.3, "majority_sign_method": "frequency"},
    ),
    ("magnitude_prune", {"density": 0.4}, {"density": 0.4}),
    ("dare_linear", {"density": 0.5}, {"density": 0.5}),
    ("dare_ties", {"density": 0.6}, {"density": 0.6}),
    ("ties_svd", {"density": 0.5}, {"density": 0.5}),
    ("magnitude_prune_svd", {"density": 0.5, "svd_rank": 6}, {"density": 0.5, "rank": 6}),
    ("dare_linear_svd", {"density": 0.5}, {"density": 0.5}),
    ("dare_ties_svd", {"density": 0.5}, {"density": 0.5}),
]


@pytest.mark.parametrize(
    ("ctype", "peft_kw", "ours"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_merged_delta_matches_peft(tiny, monkeypatch, ctype, peft_kw, ours) -> None:  # noqa: ANN001
    model, ads = tiny
    name = f"m_{ctype}_{len(model.peft_config)}"
    recorded: list[torch.Tensor] = []
    real = torch.bernoulli
    monkeypatch.setattr(
        torch, "bernoulli", lambda p, *a, **k: recorded.append(real(p)) or recorded[-1]
    )
    model.add_weighted_adapter(["a0", "a1", "a2"], WEIGHTS, name, combination_type=ctype, **peft_kw)
    monkeypatch.setattr(torch, "bernoulli", real)
    masks = iter(recorded)
    monkeypatch.setattr(peft_ops, "bernoulli_mask", lambda shape, *a: next(masks))
    spec, ctx = get_method(ctype), MergeContext()
    for mod_name, layer in _layers(model).items():  # PEFT's module order, for the DARE masks
        out = spec.fn(build_batch(ads, WEIGHTS, [mod_name], ctx), spec.parse_params(ours), ctx)
        theirs = layer.get_delta_weight(name).detach().numpy()
        mine = (out.B[0] @ out.A[0]).numpy()
        np.testing.assert_allclose(mine, theirs, atol=1e-5, rtol=1e-5, err_msg=mod_name)
    assert next(masks, None) is None  # every PEFT mask was used, in order


def test_engine_result_matches_peft_cat_and_factor_ranks(tiny) -> None:  # noqa: ANN001
    model, ads = tiny
    model.add_weighted_adapter(["a0", "a1", "a2"], WEIGHTS, "engine_cat", combination_type="cat")
    res = merge(ads, WEIGHTS, "cat")
    for mod_name, layer in _layers(model).items():
        theirs = layer.get_delta_weight("engine_cat").detach().numpy()
        np.testing.assert_allclose(res.adapter.modules[mod_name].delta(), theirs, atol=1e-5)
        assert res.adapter.modules[mod_name].rank == layer.r["engine_cat"] == 12


def test_deviation_rslora_is_not_inherited() -> None:
    model = _tiny_peft(use_rslora=True)
    ads = [_to_hub(model, f"a{i}") for i in range(3)]
    model.add_weighted_adapter(["a0", "a1", "a2"], WEIGHTS, "m", combination_type="cat")
    res = merge(ads, WEIGHTS, "cat")
    layer = _layers(model)["model.layers.0.self_attn.q_proj"]
    ours = res.adapter.modules["model.layers.0.self_attn.q_proj"].delta()
    theirs = layer.get_delta_weight("m").detach().numpy()
    inflation = np.sqrt(12) if model.peft_config["m"].use_rslora else 1.0
    np.testing.assert_allclose(theirs, inflation * ours, rtol=1e-4, atol=1e-5)
    assert res.adapter.modules["model.layers.0.self_attn.q_proj"].scaling == 1.0
