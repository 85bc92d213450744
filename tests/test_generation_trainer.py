"""Trainer: answer-only labels, batching, a real (tiny) training run, PEFT round trip."""

from __future__ import annotations

import json
import random

import pytest
import torch

from generation.prompting import IGNORE_INDEX, training_example
from generation.trainer import collate, example_batches, train_lora
from hub.core.errors import BadInputError
from tests.test_generation_tiny import tiny_base, tiny_task


def test_labels_cover_only_the_answer_and_its_end_token():
    ids, labels = training_example([10, 11, 12], [20, 21], answer_end_id=1)
    assert ids == [10, 11, 12, 20, 21, 1]
    assert labels == [IGNORE_INDEX] * 3 + [20, 21, 1]


def test_collate_right_pads_and_masks():
    batch = collate([([5, 6, 7], [-100, 6, 7]), ([8], [8])], pad_id=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_batches_use_every_description_and_the_answer_mask():
    base, task = tiny_base(), tiny_task(n_train=8)
    tok = base.tokenizer
    batches = example_batches(base, task, task.train, 4, random.Random(0))
    seen = set()
    for _ in range(10):
        batch = next(batches)
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
            scored = [int(t) for t in labels if t != IGNORE_INDEX]
            assert scored[-1] == 1 and len(scored) == 2  # one letter + end id
            text = tok.decode(ids[labels == IGNORE_INDEX][: (labels == IGNORE_INDEX).sum()])
            seen.update(d for d in task.descriptions if d in text)
    assert seen == set(task.descriptions)


def test_training_lowers_loss_and_leaves_the_base_alone():
    base, task = tiny_base(), tiny_task()
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    steps: list[int] = []
    result = train_lora(
        base, task, rank=4, steps=30, batch=16, lr=1e-2, warmup=3, seed=0, device="cpu",
        progress=lambda step, total, loss: steps.append(step),
    )  # fmt: skip
    assert steps == list(range(1, 31)) and len(result.losses) == 30
    assert sum(result.losses[-5:]) / 5 < 0.7 * sum(result.losses[:5]) / 5
    # The shared model is neither wrapped nor changed.
    assert type(base.model).__name__ == "LlamaForCausalLM"
    after = base.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not base.model.training

    adapter = result.adapter
    assert len(adapter.modules) == 4 and adapter.target_modules == ["q_proj", "v_proj"]
    q = adapter.modules["model.layers.0.self_attn.q_proj"]
    assert q.A.shape == (4, 32) and q.B.shape == (32, 4) and q.alpha == 8.0
    assert adapter.base.fingerprint == base.fingerprint
    config = json.loads(json.dumps(result.peft_config))
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["peft_type"] == "LORA"
    assert config["target_modules"] == ["q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == "test/tiny-llama"
    assert result.recipe["steps"] == 30 and result.recipe["seed"] == 0


def test_trained_adapter_helps_and_is_seeded():
    from generation.evaluator import evaluate

    base, task = tiny_base(), tiny_task(n_train=64, n_eval=16)
    kwargs = dict(rank=4, steps=30, batch=16, lr=1e-2, warmup=3, seed=3, device="cpu")
    first = train_lora(base, task, **kwargs)
    second = train_lora(base, task, **kwargs)
    assert first.losses == second.losses
    trained = evaluate(base, first.adapter, task, max_new_tokens=4).accuracy
    assert trained > evaluate(base, None, task, max_new_tokens=4).accuracy


@pytest.mark.parametrize("bad", [dict(rank=0), dict(steps=0), dict(batch=0), dict(lr=0.0)])
def test_bad_settings(bad):
    kwargs = dict(rank=2, steps=1, batch=2, seed=0, device="cpu") | bad
    with pytest.raises(BadInputError):
        train_lora(tiny_base(), tiny_task(), **kwargs)


def test_needs_train_examples():
    task = tiny_task().model_copy(update={"train": []})
    with pytest.raises(BadInputError, match="no train examples"):
        train_lora(tiny_base(), task, rank=2, steps=1, seed=0, device="cpu")
