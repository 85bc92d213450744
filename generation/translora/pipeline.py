"""The Trans-LoRA pipeline, stage by stage, over loaded models (no catalog, no settings).

1. seeds: ``params.seeds`` distinct input/output pairs of the task's train split;
2. (filter = discriminator) negatives: synthetic inputs from the generator, then a discriminator
   LoRA on ``disc_base`` trained on real train-split inputs (yes) vs those negatives (no);
3. rejection sampling: generator candidates, kept iff the discriminator says p_yes > p_no,
   until ``params.synthetic`` are kept or ``params.max_rounds`` rounds ran;
   (teacher_filter = confidence, our addition) each accepted input is labelled by the teacher
   at once and kept only if the teacher is as sure of its answer as on real inputs;
4. the teacher (source base + adapter) labels the kept inputs greedily (reusing those labels);
5. the student LoRA is trained on the target base on (input, teacher answer) pairs.

``progress(fraction, message)`` is called between and inside stages; it may raise (a cancelled
job), which stops the pipeline before anything is returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from generation.base_models import LoadedBase
from generation.tasks import Example, Task
from generation.trainer import train_lora
from generation.translora.confidence import TeacherFilter
from generation.translora.distill import student_task, teacher_labels
from generation.translora.filtering import FilterStats, Judge, rejection_sample
from generation.translora.judging import real_inputs, train_judge
from generation.translora.params import TransferParams
from generation.translora.seeds import select_seeds
from generation.translora.synthesis import ListSampler
from hub.core.errors import BadInputError, IncompatibleBaseModelError
from hub.core.lora import LoraAdapter

Progress = Callable[[float, str], None]
# Share of the progress bar each stage ends at.
STAGE_END = {"negatives": 0.1, "discriminator": 0.3, "filter": 0.55, "teacher": 0.6}


@dataclass
class TransferModels:
    source: LoadedBase  # the teacher's base
    adapter: LoraAdapter  # the source adapter (the teacher's LoRA)
    target: LoadedBase  # the student's base
    generator: LoadedBase  # writes synthetic inputs
    disc_base: LoadedBase  # the discriminator's base


@dataclass
class TransferResult:
    adapter: LoraAdapter
    peft_config: dict[str, Any]
    report: dict[str, Any]
    seeds: list[Example]
    kept: list[str] = field(repr=False)
    answers: list[str] = field(repr=False)


def student_targets(adapter: LoraAdapter, target: LoadedBase) -> list[str]:
    """The source adapter's module kinds (q_proj, v_proj ...) that the target model has."""
    leaves = {name.rsplit(".", 1)[-1] for name, _ in target.model.named_modules()}
    common = sorted(set(adapter.target_modules) & leaves)
    if not common:
        raise IncompatibleBaseModelError(
            f"the target base model {target.name} has none of the source adapter's module "
            f"kinds {adapter.target_modules}",
            code="no_common_modules",
        )
    return common


def _sampler(
    models: TransferModels, seeds: list[str], params: TransferParams, seed: int
) -> ListSampler:
    longest = max(len(x) for x in seeds)
    return ListSampler(
        models.generator,
        seeds,
        header_count=params.header_count,
        temperature=params.temperature,
        top_p=params.top_p,
        batch=params.gen_batch,
        max_chars=params.max_input_chars or 2 * longest + 8,
        seed=seed,
    )


def run_transfer(
    models: TransferModels, task: Task, params: TransferParams, *, device: str, progress: Progress
) -> TransferResult:
    clock = _Clock()
    seeds = select_seeds(task, params.seeds, params.seed)
    seed_inputs = [ex.input.strip() for ex in seeds]
    targets = student_targets(models.adapter, models.target)
    pool_sampler = _sampler(models, seed_inputs, params, params.seed)
    seen = set(seed_inputs)
    judge: Judge | None = None
    disc_report: dict[str, Any] = {"used": False}
    if params.filter == "discriminator":
        neg_sampler = _sampler(models, seed_inputs, params, params.seed + 1)
        span = (0.0, STAGE_END["negatives"], STAGE_END["discriminator"])
        disc, disc_report = train_judge(
            models.disc_base, task, params, neg_sampler, seed_inputs, device, progress, span
        )
        judge = disc.probabilities
        seen |= set(disc_report.pop("taught_no"))  # never judge what it was taught is "no"
        clock.lap("discriminator")
    confident, teacher_report = _teacher_filter(models, task, params)
    kept, stats = _filter_stage(pool_sampler, judge, params, seen, progress, confident)
    clock.lap("synthesis")
    progress(STAGE_END["filter"], f"teacher labelling {len(kept)} inputs")
    cached = confident.labels if confident is not None else {}
    todo = [x for x in kept if x not in cached]
    fresh = teacher_labels(
        models.source, models.adapter, task, todo, batch_size=params.teacher_batch
    )
    labels = {**cached, **dict(zip(todo, fresh, strict=True))}
    answers = [labels[x] for x in kept]
    distill_task = student_task(task, kept, answers)
    clock.lap("teacher")
    student = _student_stage(models, distill_task, targets, params, device, progress)
    clock.lap("student")
    report = {
        "seeds": [ex.model_dump() for ex in seeds],
        "synthesis": _synthesis_report(stats, models.generator, params, pool_sampler),
        "discriminator": disc_report,
        "teacher": {
            **teacher_report,
            "labelled": len(kept),
            "empty_answers": len(kept) - len(distill_task.train),
            "decoding": "greedy, zoo protocol (descriptions[0], stop ids of the source model)",
            "source_base": models.source.name,
        },
        "student": {**student.recipe, "train_examples": len(distill_task.train),
                    "final_loss": student.final_loss},
        "seconds": clock.laps,
    }  # fmt: skip
    return TransferResult(student.adapter, student.peft_config, report, seeds, kept, answers)


def _synthesis_report(
    stats: FilterStats, generator: LoadedBase, params: TransferParams, sampler: ListSampler
) -> dict[str, Any]:
    return {
        **stats.to_dict(),
        "generator": generator.name,
        "generator_fingerprint": generator.fingerprint,
        "header_count": params.header_count,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_input_chars": sampler.max_chars,
        "prompt_example": sampler.prompt(),
    }


class _Clock:
    """Seconds per stage, and the total."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self.last, 2)
        self.laps["total"] = round(now - self.start, 2)
        self.last = now


def _teacher_filter(
    models: TransferModels, task: Task, params: TransferParams
) -> tuple[TeacherFilter | None, dict[str, Any]]:
    """The teacher-confidence filter, calibrated on real train inputs, and its report."""
    if params.teacher_filter == "none":
        return None, {"filter": "none"}
    confident = TeacherFilter(models.source, models.adapter, task, params.teacher_batch)
    real, _ = real_inputs(task, params.teacher_calibration, params.seed)
    return confident, {"filter": "confidence", **confident.calibrate(real, params.teacher_margin)}


def _filter_stage(
    sampler: ListSampler,
    judge: Judge | None,
    params: TransferParams,
    seen: set[str],
    progress: Progress,
    confident: TeacherFilter | None,
) -> tuple[list[str], FilterStats]:
    start = STAGE_END["discriminator"] if judge is not None else 0.0
    span = STAGE_END["filter"] - start
    progress(start, "synthesizing inputs")

    def on_round(stats: FilterStats) -> None:
        share = max(stats.kept / stats.target, stats.rounds / stats.max_rounds)
        progress(
            start + span * share,
            f"kept {stats.kept}/{stats.target} synthetic inputs ({stats.rounds} rounds, "
            f"{stats.rejected} rejected, {stats.unconfident} unconfident)",
        )

    kept, stats = rejection_sample(
        sampler.round,
        judge,
        target=params.synthetic,
        max_rounds=params.max_rounds,
        seen=seen,
        on_round=on_round,
        confident=confident,
    )
    if not kept:
        raise BadInputError(
            f"the generator yielded no usable synthetic inputs in {stats.rounds} rounds "
            f"({stats.generated} parsed, {stats.new} new, {stats.rejected} rejected by the "
            f"discriminator, {stats.unconfident} by the teacher-confidence filter); nothing "
            "was registered",
            code="no_usable_samples",
            **stats.to_dict(),
        )
    return kept, stats


def _student_stage(
    models: TransferModels,
    distill_task: Task,
    targets: list[str],
    params: TransferParams,
    device: str,
    progress: Progress,
) -> Any:
    start = STAGE_END["teacher"]
    rank = params.rank or max(models.adapter.ranks.values())

    def on_step(step: int, steps: int, loss: float) -> None:
        progress(start + (0.99 - start) * step / steps, f"training student {step}/{steps} "
                 f"(loss {loss:.3f})")  # fmt: skip

    progress(start, f"training student on {len(distill_task.train)} examples")
    return train_lora(
        models.target,
        distill_task,
        rank=rank,
        targets=targets,
        steps=params.steps,
        batch=params.batch,
        lr=params.lr,
        warmup=min(params.warmup, params.steps),
        seed=params.seed,
        device=device,
        progress=on_step,
    )
