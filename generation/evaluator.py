"""Exact-match evaluation of base + adapter on a task's eval split, per the zoo protocol.

Greedy decoding with the KV cache (``model.generate``), left padding with the model's pad id and
an attention mask, at most ``max_new_tokens``, stop at the spec's stop ids. Examples are sorted
by prompt length so batches carry little padding; results come back in the original order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from generation.apply import AdapterLike, Attachable, applied
from generation.base_models import LoadedBase
from generation.prompting import answer_text, encode_prompt
from generation.tasks import Example, Task
from hub.core.errors import BadInputError


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    n: int
    outputs: list[dict[str, Any]] = field(repr=False)  # {input, expected, output, correct}
    seconds: float


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (batch, width)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


class _LineEnded(StoppingCriteria):
    """Per-row stop once a generated token contains a newline. The answer is cut at the first
    newline anyway, so the tokens after it can never change a score; stopping there only saves
    decoding steps (a base model often rambles to the token limit)."""

    def __init__(self, prompt_width: int, newline_ids: torch.Tensor) -> None:
        self.prompt_width = prompt_width
        self.newline_ids = newline_ids

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
        new = input_ids[:, self.prompt_width :]  # (batch, generated so far)
        return torch.isin(new, self.newline_ids.to(new.device)).any(dim=1)  # (batch,)


def newline_token_ids(tokenizer: Any) -> torch.Tensor:
    """Ids of every token whose text contains a newline (cached on the tokenizer)."""
    cached = getattr(tokenizer, "_loradex_newline_ids", None)
    if cached is None:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        cached = torch.tensor([i for i, t in enumerate(texts) if "\n" in t], dtype=torch.long)
        tokenizer._loradex_newline_ids = cached
    return cached


def generate_answers(
    base: LoadedBase, prompts: list[list[int]], *, batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy answers for tokenized prompts, in the order given."""
    spec, model = base.spec, base.model
    newline_ids = newline_token_ids(base.tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = _left_pad([prompts[i] for i in chunk], spec.pad_token_id)
        out = model.generate(
            input_ids=ids.to(base.device),
            attention_mask=mask.to(base.device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(spec.stop_token_ids),
            pad_token_id=spec.pad_token_id,
            stopping_criteria=StoppingCriteriaList([_LineEnded(ids.shape[1], newline_ids)]),
            # Explicit so a model's generation_config (temperature, top_p...) cannot leak in.
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
        )  # (batch, width + new)
        new = out[:, ids.shape[1] :].tolist()
        for i, row in zip(chunk, new, strict=True):
            answers[i] = answer_text(base.tokenizer, row, spec.stop_token_ids)
    return answers


def evaluate(
    loaded_base: LoadedBase,
    adapter_like: AdapterLike | Attachable | None,
    task: Task,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 24,
) -> EvalResult:
    """Accuracy of base + ``adapter_like`` (None: the base alone) on the first ``limit`` eval
    examples, prompted with ``descriptions[0]``."""
    if batch_size < 1 or max_new_tokens < 1 or (limit is not None and limit < 1):
        raise BadInputError("batch_size, max_new_tokens and limit must be >= 1")
    start = time.perf_counter()
    examples: list[Example] = task.split("eval")[:limit]
    prompts = [
        encode_prompt(
            loaded_base.tokenizer, task.render(ex.input), add_bos=loaded_base.spec.add_bos
        )
        for ex in examples
    ]
    with torch.inference_mode(), applied(loaded_base.model, adapter_like):
        answers = generate_answers(
            loaded_base, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens
        )
    outputs = [
        {"input": ex.input, "expected": ex.output, "output": got, "correct": got == ex.output}
        for ex, got in zip(examples, answers, strict=True)
    ]
    correct = sum(1 for o in outputs if o["correct"])
    return EvalResult(
        accuracy=correct / len(outputs),
        n=len(outputs),
        outputs=outputs,
        seconds=time.perf_counter() - start,
    )
