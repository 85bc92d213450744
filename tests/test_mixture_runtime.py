"""X-LoRA runtime on a tiny random Llama: the exact checks of ALGORITHMS §5.6 (float64, so
"exact" means atol 1e-10), KV-cache generation, and parity with PEFT's XLoraModel."""

from __future__ import annotations

import copy
from contextlib import ExitStack

import numpy as np
import pytest
import torch

from generation.apply import applied
from generation.mixing import MixtureRuntime, module_order, one_hot_scalings
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from merging.mixture_gate import GateConfig, XLoraGate, effective
from tests.factories import tiny_llama

LAYERS = [f"model.layers.{i}.self_attn.{t}" for i in range(2) for t in ("q_proj", "v_proj")]
SHAPES = {"q_proj": (64, 64), "v_proj": (64, 32)}


def expert(seed: int, rank: int, names=LAYERS) -> LoraAdapter:
    rng = np.random.default_rng(seed)
    modules = {}
    for name in names:
        d_in, d_out = SHAPES[name.rsplit(".", 1)[-1]]
        modules[name] = LoraModule(
            A=rng.standard_normal((rank, d_in)) * 0.3,
            B=rng.standard_normal((d_out, rank)) * 0.3,
            alpha=2.0 * rank,
        )
    return LoraAdapter(BaseModelRef("tiny-llama"), modules)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=3).double()


@pytest.fixture(scope="module")
def experts():
    # different ranks, and the third expert adapts only the q projections (union of modules)
    return [expert(1, 4), expert(2, 2), expert(3, 3, [n for n in LAYERS if "q_proj" in n])]


def make(experts, model, **cfg):
    config = GateConfig(experts=len(experts), modules=LAYERS, hidden_size=64, **cfg)
    gate = XLoraGate(config, zero_init=False).double()
    runtime = MixtureRuntime(
        [e.modules for e in experts],
        module_order(model, LAYERS),
        gate,
        routing=config.routing,
        post=lambda s: effective(s, config),
    )
    return runtime, gate


IDS = torch.tensor([[5, 9, 17, 33, 65, 12], [7, 7, 100, 3, 41, 2]])


def logits(model, adapter=None):
    with torch.no_grad(), applied(model, adapter):
        return model(IDS).logits


@pytest.mark.parametrize("routing", ["token", "prompt"])
def test_one_hot_gate_reproduces_each_expert_exactly(model, experts, routing):
    runtime, gate = make(experts, model, routing=routing)
    for j, single in enumerate(experts):
        runtime.forced = one_hot_scalings(j, 3, len(LAYERS)).double()
        torch.testing.assert_close(
            logits(model, runtime), logits(model, single), atol=1e-10, rtol=0
        )
    # the same through the classifier: a huge bias on column j (softmax -> exactly one-hot)
    runtime.forced = None
    with torch.no_grad():
        gate.layers[-1].weight.zero_()
        gate.layers[-1].bias.copy_(torch.tensor([0.0, 1e4, 0.0], dtype=torch.float64))
    torch.testing.assert_close(
        logits(model, runtime), logits(model, experts[1]), atol=1e-10, rtol=0
    )


def test_zero_scalings_are_the_base_model_and_detach_restores_it(model, experts):
    runtime, _ = make(experts, model)
    base = logits(model)
    runtime.forced = torch.zeros(1, 1, len(LAYERS), 3, dtype=torch.float64)
    torch.testing.assert_close(logits(model, runtime), base, atol=1e-12, rtol=0)
    runtime.forced = None
    assert not torch.allclose(logits(model, runtime), base)
    torch.testing.assert_close(logits(model), base, atol=0, rtol=0)  # hooks are gone


def test_all_ones_without_softmax_is_every_expert_at_once(model, experts):
    runtime, _ = make(experts, model, softmax=False)
    runtime.forced = torch.ones(1, 1, len(LAYERS), 3, dtype=torch.float64)
    with torch.no_grad(), ExitStack() as stack:
        for e in experts:
            stack.enter_context(applied(model, e))
        expected = model(IDS).logits
    torch.testing.assert_close(logits(model, runtime), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("routing", ["token", "prompt"])
def test_scalings_shape_softmax_and_broadcast(model, experts, routing):
    runtime, _ = make(experts, model, routing=routing, layerwise=False)
    logits(model, runtime)
    lam = runtime.latest_scalings
    assert lam.shape == (2, 6, len(LAYERS), 3)
    if routing == "prompt":  # one prediction per prompt, repeated over its tokens
        torch.testing.assert_close(lam, lam[:, :1].expand_as(lam), atol=0, rtol=0)
    torch.testing.assert_close(lam.sum(-1), torch.ones(lam.shape[:-1], dtype=lam.dtype))
    assert (lam > 0).all()
    for module in range(1, len(LAYERS)):  # not layerwise: identical for every module
        torch.testing.assert_close(lam[:, :, module], lam[:, :, 0], atol=0, rtol=0)
    runtime_lw, _ = make(experts, model, routing=routing, layerwise=True)
    logits(model, runtime_lw)
    lw = runtime_lw.latest_scalings
    assert not torch.allclose(lw[:, :, 1], lw[:, :, 0])


def test_top1_with_softmax_topk_is_one_hot_per_token_and_module(model, experts):
    config = GateConfig(
        experts=3, modules=LAYERS, hidden_size=64, softmax=False, top_k=1, softmax_topk=True
    )
    lam = torch.randn(2, 5, len(LAYERS), 3, dtype=torch.float64)
    got = effective(lam, config)
    assert ((got == 0) | (got == 1)).all() and (got.sum(-1) == 1).all()
    assert (got.argmax(-1) == lam.argmax(-1)).all()
    two = effective(lam, config.model_copy(update={"top_k": 2}))
    assert ((two > 0).sum(-1) == 2).all()
    torch.testing.assert_close(two.sum(-1), torch.ones(2, 5, len(LAYERS), dtype=torch.float64))


def test_causality_later_scalings_do_not_change_earlier_logits(model, experts):
    runtime, _ = make(experts, model, routing="token")
    lam = torch.softmax(torch.randn(2, 6, len(LAYERS), 3, dtype=torch.float64), -1)
    runtime.forced = lam
    before = logits(model, runtime)
    changed = lam.clone()
    changed[:, 4] = torch.softmax(torch.randn(2, len(LAYERS), 3, dtype=torch.float64), -1)
    runtime.forced = changed
    after = logits(model, runtime)
    torch.testing.assert_close(after[:, :4], before[:, :4], atol=1e-12, rtol=0)
    assert not torch.allclose(after[:, 4:], before[:, 4:])


@pytest.mark.parametrize("layerwise", [False, True])
def test_permuting_experts_with_the_gate_columns_changes_nothing(model, experts, layerwise):
    runtime, gate = make(experts, model, layerwise=layerwise, depth=2, size=16)
    perm = [2, 0, 1]
    permuted, pgate = make([experts[p] for p in perm], model, layerwise=layerwise, depth=2, size=16)
    state = copy.deepcopy(gate.state_dict())
    last_w, last_b = "layers.2.weight", "layers.2.bias"
    cols = torch.arange(state[last_b].numel()).view(-1, 3)[:, perm].reshape(-1)
    state[last_w], state[last_b] = state[last_w][cols], state[last_b][cols]
    pgate.load_state_dict(state)
    torch.testing.assert_close(logits(model, permuted), logits(model, runtime), atol=1e-10, rtol=0)


def test_only_the_gate_gets_gradients(model, experts):
    frozen = copy.deepcopy(model).requires_grad_(False)
    before = [m.A.copy() for e in experts for m in e.modules.values()]
    runtime, gate = make(experts, frozen, depth=2, size=8, routing="token")
    with runtime.attach(frozen):
        loss = frozen(IDS, labels=IDS).loss
        loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())
    assert not any(p.requires_grad for p in frozen.parameters())
    after = [m.A for e in experts for m in e.modules.values()]
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))


def test_gate_round_trips_through_its_tensors(model, experts):
    runtime, gate = make(experts, model, depth=3, size=8, layerwise=True)
    back = XLoraGate.from_tensors(gate.config, gate.tensors()).double()
    again = MixtureRuntime(
        runtime.experts, LAYERS, back, routing="prompt", post=lambda s: effective(s, back.config)
    )
    torch.testing.assert_close(logits(model, again), logits(model, runtime), atol=1e-6, rtol=0)
    assert gate.num_parameters == (64 * 8 + 8) + (8 * 8 + 8) + (8 * 12 + 12)


@pytest.mark.parametrize("routing", ["token", "prompt"])
def test_cached_generation_equals_recomputing_every_step(model, experts, routing):
    runtime, _ = make(experts, model, routing=routing, layerwise=True)
    prompt = torch.tensor([[2, 2, 5, 9, 17], [7, 7, 100, 3, 41]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad(), runtime.attach(model):
        fast = model.generate(
            input_ids=prompt, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=2
        )
        kept = runtime.latest_scalings[:, :1]  # prompt routing: one row per sequence
    # reference: no cache, every step re-encodes everything (PEFT's way); prompt routing keeps
    # the prompt's scalings, token routing recomputes them per token
    ids, m = prompt, mask
    with torch.no_grad(), runtime.attach(model):
        for _ in range(5):
            if routing == "prompt":
                runtime.forced = kept
            pos = (m.cumsum(-1) - 1).clamp_min(0)
            out = model(input_ids=ids, attention_mask=m, position_ids=pos, use_cache=False)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            ids, m = torch.cat([ids, nxt], 1), torch.cat([m, torch.ones_like(nxt)], 1)
    runtime.forced = None
    assert fast.tolist() == ids.tolist()
