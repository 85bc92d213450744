"""Evaluator: protocol details, determinism, and agreement with a naive greedy loop."""

from __future__ import annotations

import torch

from generation.evaluator import _left_pad, evaluate, newline_token_ids
from generation.prompting import answer_text, encode_prompt
from generation.tasks import Task
from tests.test_generation_tiny import tiny_base, tiny_task, tiny_tokenizer


def naive_answer(base, prompt_ids: list[int], max_new: int) -> str:
    """One example, no padding, no KV cache: argmax of a full forward per step."""
    ids = list(prompt_ids)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(base.model(torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(nxt)
            new.append(nxt)
            if nxt in base.spec.stop_token_ids:
                break
    return answer_text(base.tokenizer, new, base.spec.stop_token_ids)


def test_answer_text_cuts_at_stop_then_newline():
    tok = tiny_tokenizer()
    ids = tok("  Paris \nmore", add_special_tokens=False).input_ids
    assert answer_text(tok, ids, (1, 2)) == "Paris"
    assert answer_text(tok, [*tok("ab").input_ids, 1, *tok("cd").input_ids], (1, 2)) == "ab"
    assert answer_text(tok, [2, *tok("x").input_ids], (1, 2)) == ""


def test_prompt_has_no_special_tokens_unless_the_spec_asks():
    tok = tiny_tokenizer()
    assert encode_prompt(tok, "hi") == tok("hi", add_special_tokens=False).input_ids
    assert encode_prompt(tok, "hi", add_bos=True)[0] == tok.bos_token_id


def test_left_pad():
    ids, mask = _left_pad([[5, 6, 7], [8]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [2, 2, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_newline_ids_are_the_tokens_containing_a_newline():
    tok = tiny_tokenizer()
    found = newline_token_ids(tok).tolist()
    assert found == tok("\n", add_special_tokens=False).input_ids


def test_matches_naive_greedy_and_keeps_order():
    base, task = tiny_base(), tiny_task(n_eval=10)
    result = evaluate(base, None, task, batch_size=4, max_new_tokens=6)
    assert result.n == 10 and [o["input"] for o in result.outputs] == [e.input for e in task.eval]
    for out, ex in zip(result.outputs, task.eval, strict=True):
        prompt = encode_prompt(base.tokenizer, task.render(ex.input))
        assert out["output"] == naive_answer(base, prompt, 6), ex.input
        assert out["correct"] == (out["output"] == ex.output)


def test_deterministic_and_limit():
    base, task = tiny_base(), tiny_task(n_eval=12)
    first = evaluate(base, None, task, batch_size=5, max_new_tokens=8)
    second = evaluate(base, None, task, batch_size=5, max_new_tokens=8)
    assert first.outputs == second.outputs and first.accuracy == second.accuracy
    assert evaluate(base, None, task, limit=3, max_new_tokens=8).outputs == first.outputs[:3]


def test_accuracy_counts_exact_matches():
    base = tiny_base()
    probe = evaluate(base, None, tiny_task(n_eval=4), max_new_tokens=4)
    # Expected outputs set to what the model says for half of the examples.
    rows = [
        {"input": o["input"], "output": o["output"] if i % 2 == 0 and o["output"] else "zzz"}
        for i, o in enumerate(probe.outputs)
    ]
    task = Task(name="t", descriptions=["Give the first letter."], eval=rows)
    result = evaluate(base, None, task, max_new_tokens=4)
    assert result.accuracy == sum(o["correct"] for o in result.outputs) / 4
    assert all(o["correct"] == (o["output"] == o["expected"]) for o in result.outputs)
