"""`applied` (forward hooks) must compute exactly what PEFT's LoRA layers compute."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from generation.apply import AdapterLike, applied
from hub.core.errors import IncompatibleBaseModelError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from tests.test_generation_tiny import tiny_model


def peft_twin(model, *, use_rslora: bool):
    """A PEFT-wrapped copy with random (non-zero) factors, per-module ranks, and the same
    factors as a LoraAdapter."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        rank_pattern={"model.layers.1.self_attn.v_proj": 2},
        use_rslora=use_rslora,
        lora_dropout=0.0,
    )
    torch.manual_seed(1)
    peft_model = get_peft_model(copy.deepcopy(model), config).eval()
    modules = {}
    for name, layer in peft_model.named_modules():
        if isinstance(layer, LoraLayer):
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            with torch.no_grad():
                b.normal_(0, 0.5)  # PEFT inits B to 0, which would hide any bug
            modules[name.removeprefix("base_model.model.")] = LoraModule(
                A=a.detach().numpy().copy(),
                B=b.detach().numpy().copy(),
                alpha=layer.lora_alpha["default"],
                use_rslora=use_rslora,
            )
    return peft_model, LoraAdapter(BaseModelRef("tiny"), modules)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_applied_matches_peft_and_restores(use_rslora):
    model = tiny_model(64)
    peft_model, adapter = peft_twin(model, use_rslora=use_rslora)
    assert adapter.ranks["model.layers.1.self_attn.v_proj"] == 2
    assert isinstance(adapter, AdapterLike)
    ids = torch.randint(3, 64, (3, 7))
    with torch.no_grad():
        base = model(ids).logits  # (3, 7, vocab)
        expected = peft_model(ids).logits
        with applied(model, adapter) as hooked:
            assert hooked is model
            got = model(ids).logits
        after = model(ids).logits
    assert (expected - base).abs().max() > 1e-2  # the adapter really changes the output
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(after, base, atol=0, rtol=0)
    assert not any(m._forward_hooks for m in model.modules())


def test_none_is_the_base_model():
    model = tiny_model(64)
    ids = torch.randint(3, 64, (1, 5))
    with torch.no_grad(), applied(model, None):
        out = model(ids).logits
    torch.testing.assert_close(out, model(ids).logits)


def test_hooks_removed_when_the_block_raises():
    model = tiny_model(64)
    _, adapter = peft_twin(model, use_rslora=False)
    with pytest.raises(RuntimeError, match="boom"), applied(model, adapter):
        raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in model.modules())


def _single(name: str, d_in: int, d_out: int) -> LoraAdapter:
    rng = np.random.default_rng(0)
    module = LoraModule(A=rng.normal(size=(2, d_in)), B=rng.normal(size=(d_out, 2)), alpha=4)
    return LoraAdapter(BaseModelRef("tiny"), {name: module})


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        (_single("model.layers.9.self_attn.q_proj", 32, 32), "does not exist"),
        (_single("model.layers.0.self_attn.q_proj", 32, 16), "maps 32 -> 16 features"),
        (_single("model.layers.0.self_attn.v_proj", 48, 16), "maps 48 -> 16"),
        (_single("model.norm", 32, 32), "not a Linear layer"),
    ],
)
def test_incompatible_adapters_name_the_module(adapter, message):
    model = tiny_model(64)
    name = next(iter(adapter.modules))
    with pytest.raises(IncompatibleBaseModelError, match=message) as info, applied(model, adapter):
        pass
    assert name in info.value.message and info.value.details["module"] == name
    assert not any(m._forward_hooks for m in model.modules())


def test_plain_objects_plug_in():
    """Anything with `.modules` of objects with A, B, scaling works (mixtures later)."""

    class Factors:
        def __init__(self, a, b, scaling):
            self.A, self.B, self.scaling = a, b, scaling

    class Mixture:
        def __init__(self, modules):
            self.modules = modules

    model = tiny_model(64)
    layer = model.model.layers[0].self_attn.q_proj
    a = np.full((1, layer.in_features), 0.1, dtype=np.float32)
    b = np.ones((layer.out_features, 1), dtype=np.float32)
    x = torch.randn(2, layer.in_features)
    with (
        torch.no_grad(),
        applied(model, Mixture({"model.layers.0.self_attn.q_proj": Factors(a, b, 3.0)})),
    ):
        got = layer(x)
    with torch.no_grad():
        want = layer(x) + 3.0 * (x @ torch.from_numpy(a).T) @ torch.from_numpy(b).T
    torch.testing.assert_close(got, want)
