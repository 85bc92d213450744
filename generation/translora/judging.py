"""The discriminator stage (ALGORITHMS.md 6.2 steps 2-3, done at transfer time here): real
inputs from the task file, synthetic negatives from the generator, a discriminator trained to
tell them apart, and the statistics the recipe records.

Which real data: the paper trains the discriminator once, at source-training time, on the full
task data D. The hub keeps the task file of zoo and trained adapters, so it trains on up to
``disc_real`` distinct inputs of the task's **train split** (the source adapter's own training
data; the eval split is never read). The negatives come from a generator stream seeded apart
from the one that proposes candidates, an input equal to a real one is never a negative, and
the negatives it was taught are never judged as candidates later.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from generation.base_models import LoadedBase
from generation.tasks import Task
from generation.translora.discriminator import (
    DISC_TEMPLATE,
    Discriminator,
    answer_token_ids,
    discriminator_task,
    train_discriminator,
)
from generation.translora.filtering import FilterStats, rejection_sample
from generation.translora.params import TransferParams
from generation.translora.seeds import usable_examples
from generation.translora.synthesis import ListSampler
from hub.core.errors import BadInputError

Progress = Callable[[float, str], None]
REAL_SOURCE = "train split of the adapter's task file (the source adapter's own task data)"


def real_inputs(task: Task, count: int, seed: int) -> tuple[list[str], set[str]]:
    """Up to ``count`` distinct single-line train inputs drawn with ``seed``, and every one."""
    pool = [ex.input.strip() for ex in usable_examples(task)]
    real = random.Random(seed).sample(pool, min(count, len(pool)))
    if len(real) < 2:
        raise BadInputError(
            f"the discriminator needs at least 2 real inputs; task {task.name!r} has "
            f"{len(real)} (use filter 'none' to keep every synthetic input)",
            code="too_little_real_data",
        )
    return real, set(pool)


def make_negatives(
    sampler: ListSampler,
    wanted: int,
    known_real: set[str],
    seeds: list[str],
    max_rounds: int,
    progress: Progress,
    span: tuple[float, ...],
) -> tuple[list[str], FilterStats]:
    """``wanted`` distinct synthetic inputs (fewer if the round cap hits first), none of them a
    known real input."""
    progress(span[0], f"generating {wanted} synthetic negatives for the discriminator")

    def negatives_round(index: int) -> list[str]:
        # An input equal to a real one is not a negative; it may still be kept later.
        return [x for x in sampler.round(index) if x not in known_real]

    def on_round(stats: FilterStats) -> None:
        share = max(stats.kept / stats.target, stats.rounds / stats.max_rounds)
        progress(span[0] + (span[1] - span[0]) * share, f"negatives {stats.kept}/{stats.target}")

    return rejection_sample(
        negatives_round,
        None,
        target=wanted,
        max_rounds=max_rounds,
        seen=set(seeds),
        on_round=on_round,
    )


def train_judge(
    base: LoadedBase,
    task: Task,
    params: TransferParams,
    sampler: ListSampler,
    seeds: list[str],
    device: str,
    progress: Progress,
    span: tuple[float, float, float],
) -> tuple[Discriminator, dict[str, Any]]:
    """A trained discriminator and its report; ``report["taught_no"]`` lists the negatives
    it was trained on (the caller removes the key after using it). Progress runs from
    ``span[0]`` to ``span[1]`` while making negatives, then to ``span[2]`` while training."""
    real, known_real = real_inputs(task, params.disc_real, params.seed)
    negatives, neg_stats = make_negatives(
        sampler, len(real), known_real, seeds, params.max_rounds, progress, span[:2]
    )
    disc_task = discriminator_task(
        real, negatives, task.descriptions[0], rng=random.Random(params.seed)
    )

    def on_step(step: int, steps: int, loss: float) -> None:
        fraction = span[1] + (span[2] - span[1]) * step / steps
        progress(fraction, f"training discriminator {step}/{steps} (loss {loss:.3f})")

    disc, trained = train_discriminator(
        base, disc_task, rank=params.disc_rank, steps=params.disc_steps,
        batch=params.disc_batch, lr=params.disc_lr, seed=params.seed, device=device,
        progress=on_step,
    )  # fmt: skip
    seed_scores = disc.probabilities(seeds)
    yes_id, no_id = answer_token_ids(base.tokenizer)
    report = {
        "used": True,
        "base": base.name,
        "real_source": REAL_SOURCE,
        "real_inputs": len(real),
        "synthetic_inputs": len(negatives),
        "negatives_rounds": neg_stats.rounds,
        "train_examples": len(disc_task.train),
        "holdout_examples": len(disc_task.eval),
        "holdout_accuracy": disc.accuracy(disc_task.eval),
        "seeds_judged_real": sum(py > pn for py, pn in seed_scores) / len(seed_scores),
        "template": DISC_TEMPLATE,
        "answer_token_ids": {"yes": yes_id, "no": no_id},
        "rank": params.disc_rank, "steps": params.disc_steps, "batch": params.disc_batch,
        "lr": params.disc_lr, "final_loss": trained.final_loss,
        "taught_no": [ex.input for ex in disc_task.train + disc_task.eval if ex.output == "no"],
    }  # fmt: skip
    return disc, report
