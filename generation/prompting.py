"""Token-level protocol shared by evaluation and training (shared/zoo/README.md, Protocol).

Prompts are tokenized without special tokens (plus the model's BOS only where its spec asks);
a training target is the output's tokens followed by ``answer_end_id``; a generated answer is the
text before the first stop id, cut at the first newline and stripped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE_INDEX = -100  # label value the HF loss skips


def encode_prompt(tokenizer: Any, text: str, *, add_bos: bool = False) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    if add_bos and tokenizer.bos_token_id is not None:
        ids.insert(0, int(tokenizer.bos_token_id))
    return ids


def training_example(
    prompt_ids: Sequence[int], answer_ids: Sequence[int], answer_end_id: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels): the loss sees only the answer and its end token.

    Prompt and answer are tokenized separately (the prompt ends with a newline, so the split
    matches what the model sees at evaluation: the prompt, then its own generated tokens).
    """
    target = [*answer_ids, answer_end_id]
    return [*prompt_ids, *target], [IGNORE_INDEX] * len(prompt_ids) + target


def answer_text(tokenizer: Any, new_ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """Decode generated ids up to the first stop id; keep the first line, stripped."""
    stops = set(stop_ids)
    cut = next((i for i, t in enumerate(new_ids) if t in stops), len(new_ids))
    text = tokenizer.decode(list(new_ids[:cut]), skip_special_tokens=True)
    return text.split("\n", 1)[0].strip()
