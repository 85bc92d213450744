"""Seed examples (ALGORITHMS.md 6.2: the tiny seed set, |D| = 5) from a task's train split."""

from __future__ import annotations

import random

from generation.tasks import Example, Task
from hub.core.errors import BadInputError


def usable_examples(task: Task) -> list[Example]:
    """Train-split examples whose input can be a list item (one non-empty line), first
    occurrence of each input."""
    first: dict[str, Example] = {}
    for ex in task.train:
        key = ex.input.strip()
        if _one_line(key) and key not in first:
            first[key] = ex
    return list(first.values())


def _one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip()


def select_seeds(task: Task, count: int, seed: int) -> list[Example]:
    """``count`` distinct single-line examples of the train split (all of them when fewer),
    drawn with ``seed``; at least 2 are needed for a list a model can continue."""
    pool = usable_examples(task) if task.train else []
    if len(pool) < 2:
        raise BadInputError(
            f"task {task.name!r} has {len(pool)} usable seed example(s) in its train split "
            "(distinct single-line inputs); Trans-LoRA needs at least 2",
            code="too_few_seeds",
        )
    picked = random.Random(seed).sample(range(len(pool)), min(count, len(pool)))
    return [pool[i] for i in sorted(picked)]
