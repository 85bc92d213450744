"""Exact-match accuracy by teacher forcing: one forward pass instead of up to 24 decode steps.

Greedy decoding reproduces the expected answer exactly when, at every answer position, the
arg-max token given the *expected* prefix is the expected token (the greedy prefix is then the
expected prefix), and the token after the answer ends it: a stop id, or a token whose text
starts (after spaces) with a newline, since answers are cut at the first newline and stripped.
With at most ``max_new_tokens`` generated tokens, an answer of exactly that many tokens needs no
end token and a longer one can never match. So one batched forward pass over
``prompt + answer`` decides every example, ~10-20x faster than :func:`generation.evaluator.
evaluate` on CPU (the base model rambles to the token limit).

The two agree except where the decoder's text clean-up hides a difference in tokens, which this
scorer counts as a miss: the same text spelled with a *different* tokenization (``"Par" +
"is"`` instead of ``"Paris"``), leading or trailing spaces the decoder strips, or a special token
(skipped when decoding) right after the answer. So a forced hit is always a greedy hit.
Benchmarks use it (and report the agreement they measured); recorded evaluations
(``loradex eval``) always use the real decoder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from generation.apply import AdapterLike, applied
from generation.base_models import LoadedBase
from generation.evaluator import EvalResult
from generation.prompting import encode_prompt
from generation.tasks import Task
from hub.core.errors import BadInputError


def _ending_ids(tokenizer: Any, stop_ids: tuple[int, ...]) -> torch.Tensor:
    """Ids that end an answer cleanly: stop ids and tokens that are spaces then a newline."""
    cached = getattr(tokenizer, "_loradex_ending_ids", None)
    if cached is None:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        ends = {i for i, t in enumerate(texts) if "\n" in t and not t.split("\n", 1)[0].strip()}
        cached = torch.tensor(sorted(ends | set(stop_ids)), dtype=torch.long)
        tokenizer._loradex_ending_ids = cached
    return cached


def _rows(
    base: LoadedBase, task: Task, pairs: Sequence[tuple[str, str]]
) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt and answer token ids of (input, answer) pairs in the task's template."""
    tok = base.tokenizer
    prompts = [encode_prompt(tok, task.render(x), add_bos=base.spec.add_bos) for x, _ in pairs]
    answers = [list(tok(y, add_special_tokens=False).input_ids) for _, y in pairs]
    return prompts, answers


class AnswerScore(NamedTuple):
    """How base + adapter scores one answer by teacher forcing."""

    correct: bool  # greedy decoding would produce exactly this answer
    nll: float  # mean answer-token negative log-likelihood (inf for an empty answer)
    worst_nll: float  # the largest single answer-token NLL: the least sure step


def _batch_correct(
    base: LoadedBase,
    prompts: list[list[int]],
    answers: list[list[int]],
    ending: torch.Tensor,
    max_new_tokens: int,
) -> list[AnswerScore]:
    """One score per row. Right-padded: logits at t predict t + 1."""
    rows = [p + a for p, a in zip(prompts, answers, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), base.spec.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    logits = base.model(input_ids=ids.to(base.device), attention_mask=mask.to(base.device)).logits
    best = logits.argmax(-1).cpu()  # (batch, width): greedy choice after each position
    logp = torch.log_softmax(logits.float(), -1).cpu()  # (batch, width, vocab)
    out: list[AnswerScore] = []
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        n = len(answer)
        start = len(prompt) - 1  # the position whose prediction is the first answer token
        target = torch.tensor(answer)
        token_nll = -logp[i, start : start + n].gather(-1, target[:, None])
        ok = n <= max_new_tokens and bool(torch.equal(best[i, start : start + n], target))
        if ok and n < max_new_tokens:
            ok = bool(torch.isin(best[i, start + n], ending))
        out.append(AnswerScore(ok, float(token_nll.mean()), float(token_nll.max())))
    return out


def score_answers(
    loaded_base: LoadedBase,
    adapter_like: AdapterLike | None,
    task: Task,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 24,
) -> list[AnswerScore]:
    """The score of each (input, answer) pair, in order, by teacher forcing. An empty answer has
    no tokens: NLLs ``inf``, never correct."""
    if batch_size < 1 or max_new_tokens < 1:
        raise BadInputError("batch_size and max_new_tokens must be >= 1")
    prompts, answers = _rows(loaded_base, task, pairs)
    ending = _ending_ids(loaded_base.tokenizer, loaded_base.spec.stop_token_ids)
    scored = [AnswerScore(False, math.inf, math.inf)] * len(pairs)
    rows = [i for i, a in enumerate(answers) if a]
    with torch.inference_mode(), applied(loaded_base.model, adapter_like):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            results = _batch_correct(
                loaded_base,
                [prompts[i] for i in chunk],
                [answers[i] for i in chunk],
                ending,
                max_new_tokens,
            )
            for i, result in zip(chunk, results, strict=True):
                scored[i] = result
    return scored


def forced_accuracy(
    loaded_base: LoadedBase,
    adapter_like: AdapterLike | None,
    task: Task,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 24,
) -> EvalResult:
    """Accuracy of base + ``adapter_like`` on the first ``limit`` eval examples, as greedy exact
    match would score it (see the module docstring for the one difference). Each output also
    carries ``nll``: the mean negative log-likelihood of the expected answer tokens, a
    continuous signal where accuracy is 0 or 1 on few examples."""
    if limit is not None and limit < 1:
        raise BadInputError("limit must be >= 1")
    start = time.perf_counter()
    examples = task.split("eval")[:limit]
    scored = score_answers(
        loaded_base,
        adapter_like,
        task,
        [(ex.input, ex.output) for ex in examples],
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
    )
    outputs = [
        {"input": ex.input, "expected": ex.output, "correct": sc.correct, "nll": sc.nll}
        for ex, sc in zip(examples, scored, strict=True)
    ]
    return EvalResult(
        accuracy=sum(sc.correct for sc in scored) / len(scored),
        n=len(scored),
        outputs=outputs,
        seconds=time.perf_counter() - start,
    )
