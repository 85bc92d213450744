"""Distillation data (ALGORITHMS.md 6.2 step 6): the teacher labels synthetic inputs, the
student learns them on its own base model.

The teacher is the source base + source adapter, decoding greedily under the zoo protocol
(prompt with ``descriptions[0]``, the source tokenizer's own BOS/stop/pad ids, answer = first
line before a stop id). Only text crosses between the models (sequence-level distillation): the
two bases have different tokenizers, so token distributions cannot be matched. The student task
keeps the source task's plain-text prompt template and descriptions; the trainer tokenizes it
with the target's tokenizer and ends every answer with the target's own end id.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from generation.apply import AdapterLike, applied
from generation.base_models import LoadedBase
from generation.evaluator import generate_answers
from generation.prompting import encode_prompt
from generation.tasks import Example, Task
from hub.core.errors import BadInputError


def teacher_labels(
    teacher: LoadedBase,
    adapter: AdapterLike,
    task: Task,
    inputs: Sequence[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 24,
) -> list[str]:
    """The teacher's greedy answer to each input (may be empty), in order."""
    prompts = [
        encode_prompt(teacher.tokenizer, task.render(x), add_bos=teacher.spec.add_bos)
        for x in inputs
    ]
    with torch.inference_mode(), applied(teacher.model, adapter):
        return generate_answers(
            teacher, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens
        )


def student_task(task: Task, inputs: Sequence[str], answers: Sequence[str]) -> Task:
    """The source task's prompt and descriptions over (synthetic input, teacher answer) pairs;
    empty answers are dropped (a target that is only the end token teaches nothing)."""
    train = [Example(input=x, output=y) for x, y in zip(inputs, answers, strict=True) if y.strip()]
    if not train:
        raise BadInputError(
            f"the teacher gave an empty answer to every synthetic input of task {task.name!r}; "
            "nothing to distill",
            code="no_usable_samples",
        )
    return Task(
        name=task.name,
        family=task.family,
        descriptions=task.descriptions,
        prompt=task.prompt,
        train=train,
        eval=[],
    )
