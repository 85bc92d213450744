"""Teacher-forced exact match (generation/forced_eval.py) against the real greedy evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generation.evaluator import evaluate
from generation.forced_eval import forced_accuracy
from generation.tasks import Task
from tests.test_generation_tiny import tiny_base, tiny_task


def lettered_base(seed: int):
    """The tiny model, made to speak only 'A', 'B', 'C' and newlines: its answers are ASCII, so
    their text re-tokenizes to the very tokens it generated (random bytes would not). Rows
    +-w, +-u: one of the four logits is always positive, so the zeroed rest never wins."""
    base = tiny_base(seed=seed)
    allowed = [base.tokenizer.convert_tokens_to_ids(t) for t in ["A", "B", "C", "Ċ"]]
    with torch.no_grad():
        head = base.model.lm_head.weight
        w, u = head[allowed[0]].clone() * 20, head[allowed[2]].clone() * 20
        head.zero_()
        head[allowed] = torch.stack([w, -w, u, -u])
    return base


@pytest.mark.parametrize("seed", [0, 3])
def test_forced_scoring_agrees_with_greedy_decoding(seed):
    base = lettered_base(seed)
    template = tiny_task(n_eval=12)
    probe = evaluate(base, None, template, max_new_tokens=6)
    # Expected outputs: what the model says for two thirds of the examples, "zz" for the rest.
    rows = [
        {"input": o["input"], "output": o["output"] if o["output"] and i % 3 else "zz"}
        for i, o in enumerate(probe.outputs)
    ]
    task = Task(name="t", descriptions=template.descriptions, eval=rows)
    greedy = evaluate(base, None, task, max_new_tokens=6)
    forced = forced_accuracy(base, None, task, max_new_tokens=6, batch_size=5)
    g = [o["correct"] for o in greedy.outputs]
    assert sum(g) >= 4  # the comparison covers hits (answers ending early and at the limit)
    assert [o["correct"] for o in forced.outputs] == g
    assert forced.accuracy == greedy.accuracy and forced.n == 12
    assert all(np.isfinite(o["nll"]) and o["nll"] >= 0 for o in forced.outputs)


def test_answers_longer_than_the_token_budget_never_match():
    base = tiny_base()
    task = Task(name="t", descriptions=["d"], eval=[{"input": "a", "output": "x" * 10}])
    assert forced_accuracy(base, None, task, max_new_tokens=4).accuracy == 0.0
