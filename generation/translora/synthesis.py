"""Synthetic task inputs from a generator LLM (ALGORITHMS.md 6.2 step 4).

The prompt is a numbered list that claims more items than it shows (``Here are 10 examples:``,
the seeds as items 1..k, then ``k+1.``); a language model continues the list. The parser keeps
only what is clearly a list item: the rest of line ``k+1``, then lines ``k+2. ...``, ``k+3. ...``
in order up to the claimed count. The first line that breaks the pattern (a blank line, prose,
a skipped number) ends the list, and a last line without its newline is dropped (the token limit
may have cut it). Empty items, items longer than the cap, seeds and repeats are dropped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from generation.base_models import LoadedBase
from generation.evaluator import _left_pad, newline_token_ids
from generation.prompting import encode_prompt
from hub.core.errors import BadInputError

_ITEM = re.compile(r"(\d+)\.(?:\s(.*))?")


def build_list_prompt(seeds: Sequence[str], header_count: int = 10) -> str:
    """``Here are N examples:\\n1. s1\\n...\\nk. sk\\nk+1.`` (no trailing space: the model
    writes it, as after every other number)."""
    if len(seeds) < 1:
        raise BadInputError("the list prompt needs at least one seed")
    if header_count <= len(seeds):
        raise BadInputError(
            f"the header must claim more examples ({header_count}) than it shows ({len(seeds)})"
        )
    for seed in seeds:
        if not seed.strip() or "\n" in seed:
            raise BadInputError(f"seed {seed!r} is empty or spans lines; list items are lines")
    lines = [f"Here are {header_count} examples:"]
    lines += [f"{i}. {seed.strip()}" for i, seed in enumerate(seeds, 1)]
    return "\n".join(lines) + f"\n{len(seeds) + 1}."


def parse_list_continuation(
    text: str, first_number: int, last_number: int, max_chars: int
) -> list[str]:
    """Items of a continuation of :func:`build_list_prompt` (``text`` starts right after
    ``"{first_number}."``), in order, stripped; empty and over-long items dropped."""
    complete_lines = text.split("\n")[:-1]  # after the last newline: possibly cut off
    items: list[str] = []
    for number, line in enumerate(complete_lines, first_number):
        if number > last_number:
            break
        if number == first_number:
            body = line
        else:
            match = _ITEM.fullmatch(line.strip())
            if match is None or int(match.group(1)) != number:
                break
            body = match.group(2) or ""
        items.append(body.strip())
    return [item for item in items if item and len(item) <= max_chars]


def keep_new(items: Iterable[str], seen: set[str]) -> list[str]:
    """Items not in ``seen`` (seeds, earlier samples), first occurrence only; updates ``seen``."""
    fresh = []
    for item in items:
        if item not in seen:
            seen.add(item)
            fresh.append(item)
    return fresh


class _ListEnded(StoppingCriteria):
    """Per-row stop once the continuation holds ``lines`` newlines: the list is complete (or
    broken by a blank line, which the parser stops at anyway)."""

    def __init__(self, prompt_width: int, newline_ids: torch.Tensor, lines: int) -> None:
        self.prompt_width, self.newline_ids, self.lines = prompt_width, newline_ids, lines

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
        new = input_ids[:, self.prompt_width :]  # (batch, generated so far)
        hits = torch.isin(new, self.newline_ids.to(new.device)).sum(dim=1)  # (batch,)
        return hits >= self.lines


class ListSampler:
    """Samples continuations of list prompts built from shuffled seed orders, one round (a
    batch of prompts) at a time. Deterministic given ``seed`` on one device."""

    def __init__(
        self,
        generator: LoadedBase,
        seeds: Sequence[str],
        *,
        header_count: int,
        temperature: float,
        top_p: float,
        batch: int,
        max_chars: int,
        seed: int,
    ) -> None:
        self.generator, self.seeds = generator, list(seeds)
        self.header_count, self.temperature, self.top_p = header_count, temperature, top_p
        self.batch, self.max_chars, self.seed = batch, max_chars, seed
        self._rng = random.Random(seed)
        tok = generator.tokenizer
        longest = max(len(tok(s, add_special_tokens=False).input_ids) for s in self.seeds)
        self.wanted = header_count - len(self.seeds)  # items after the seeds
        # Each item: its tokens (seeds x 2 for variety), the number, the dot and the newline.
        self.max_new_tokens = min(512, self.wanted * (2 * longest + 4))

    def prompt(self) -> str:
        order = self._rng.sample(self.seeds, len(self.seeds))  # vary the order per prompt
        return build_list_prompt(order, self.header_count)

    def round(self, index: int) -> list[str]:
        """Items parsed from one batch of continuations (repeats not yet removed)."""
        base, tok = self.generator, self.generator.tokenizer
        rows = [
            encode_prompt(tok, self.prompt(), add_bos=base.spec.add_bos) for _ in range(self.batch)
        ]
        ids, mask = _left_pad(rows, base.spec.pad_token_id)
        torch.manual_seed(self.seed * 100_003 + index)  # sampling RNG, per round
        stop = _ListEnded(ids.shape[1], newline_token_ids(tok), self.wanted)
        with torch.inference_mode():
            out = base.model.generate(
                input_ids=ids.to(base.device),
                attention_mask=mask.to(base.device),
                do_sample=True,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=0,  # nucleus sampling only
                max_new_tokens=self.max_new_tokens,
                eos_token_id=list(base.spec.stop_token_ids),
                pad_token_id=base.spec.pad_token_id,
                stopping_criteria=StoppingCriteriaList([stop]),
            )  # (batch, width + new)
        items: list[str] = []
        first = len(self.seeds) + 1
        for row in out[:, ids.shape[1] :].tolist():
            text = tok.decode(row, skip_special_tokens=True)
            items += parse_list_continuation(text, first, self.header_count, self.max_chars)
        return items
