"""The discriminator: a LoRA on an LLM that answers whether an input is a real task input
(ALGORITHMS.md 6.2 step 3). It maximises log p("yes" | t(x)) on real inputs and log p("no" | t(x))
on synthetic ones, where t(x) is :data:`DISC_TEMPLATE`; the filter keeps x iff
p("yes" | t(x)) > p("no" | t(x)).

It is trained with the zoo trainer (a yes/no task whose prompt is t(x)), so training and judging
render t(x) through the same ``Task.render`` and tokenization; the judge compares the
probabilities of the first tokens of the two training answers at the last prompt position.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from generation.apply import applied
from generation.base_models import LoadedBase
from generation.evaluator import _left_pad
from generation.prompting import encode_prompt
from generation.tasks import Example, Task
from generation.trainer import TrainResult, train_lora
from hub.core.errors import BadInputError
from hub.core.lora import LoraAdapter

# t(x): the paper's "x + '\n Is the above question from NAME dataset?'", with the task's own
# description as NAME (the hub has no shorter dataset name).
DISC_TEMPLATE = '{input}\nIs the above an input of the task "{description}"? Answer yes or no.\n'
YES, NO = "yes", "no"


def discriminator_task(
    real: Sequence[str],
    synthetic: Sequence[str],
    descriptor: str,
    *,
    holdout: float = 0.2,
    rng: random.Random,
) -> Task:
    """Balanced yes/no examples: as many distinct real inputs (yes) as distinct synthetic ones
    (no). A synthetic input that equals a real one is not a negative (it would contradict a
    positive). A stratified ``holdout`` share of each label becomes the eval split."""
    real_set = list(dict.fromkeys(x for x in real if x.strip()))
    fake_set = [x for x in dict.fromkeys(synthetic) if x.strip() and x not in set(real_set)]
    n = min(len(real_set), len(fake_set))
    if n < 2:
        raise BadInputError(
            f"the discriminator needs at least 2 distinct real and 2 distinct synthetic inputs "
            f"(got {len(real_set)} real, {len(fake_set)} synthetic)",
            code="discriminator_data",
        )
    positives, negatives = rng.sample(real_set, n), rng.sample(fake_set, n)
    held = int(n * holdout)
    train = [Example(input=x, output=YES) for x in positives[held:]]
    train += [Example(input=x, output=NO) for x in negatives[held:]]
    evals = [Example(input=x, output=YES) for x in positives[:held]]
    evals += [Example(input=x, output=NO) for x in negatives[:held]]
    rng.shuffle(train)
    return Task(
        name="trans-lora-discriminator",
        family="discriminator",
        descriptions=[descriptor],
        prompt=DISC_TEMPLATE,
        train=train,
        eval=evals,
    )


def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """First token of "yes" and of "no" as the trainer tokenizes answers (no special tokens)."""
    yes = tokenizer(YES, add_special_tokens=False).input_ids[0]
    no = tokenizer(NO, add_special_tokens=False).input_ids[0]
    if yes == no:
        raise BadInputError("the tokenizer maps 'yes' and 'no' to the same first token")
    return int(yes), int(no)


@dataclass
class Discriminator:
    """base + LoRA judging inputs of ``task`` (the discriminator task: its template and
    descriptor)."""

    base: LoadedBase
    adapter: LoraAdapter | None
    task: Task
    batch_size: int = 32

    def prompts(self, inputs: Sequence[str]) -> list[list[int]]:
        tok, spec = self.base.tokenizer, self.base.spec
        return [encode_prompt(tok, self.task.render(x), add_bos=spec.add_bos) for x in inputs]

    def probabilities(self, inputs: Sequence[str]) -> list[tuple[float, float]]:
        """(p_yes, p_no) per input: softmax over the whole vocabulary at the last position."""
        yes, no = answer_token_ids(self.base.tokenizer)
        rows = self.prompts(inputs)
        result: list[tuple[float, float]] = []
        model, pad = self.base.model, self.base.spec.pad_token_id
        with torch.inference_mode(), applied(model, self.adapter):
            for start in range(0, len(rows), self.batch_size):
                ids, mask = _left_pad(rows[start : start + self.batch_size], pad)
                logits = model(
                    input_ids=ids.to(self.base.device),
                    attention_mask=mask.to(self.base.device),
                    logits_to_keep=1,  # left padding: the last position is every row's own
                ).logits[:, -1, :]  # (batch, vocab)
                probs = torch.softmax(logits.float(), dim=-1)
                result += [(float(p[yes]), float(p[no])) for p in probs]
        return result

    def accuracy(self, examples: Sequence[Example]) -> float | None:
        """Share of examples judged right (yes iff p_yes > p_no); None without examples."""
        if not examples:
            return None
        scores = self.probabilities([ex.input for ex in examples])
        pairs = zip(examples, scores, strict=True)
        right = sum((py > pn) == (ex.output == YES) for ex, (py, pn) in pairs)
        return right / len(examples)


def train_discriminator(
    base: LoadedBase,
    task: Task,
    *,
    rank: int,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    device: str,
    progress: Any = None,
) -> tuple[Discriminator, TrainResult]:
    result = train_lora(
        base,
        task,
        rank=rank,
        steps=steps,
        batch=batch,
        lr=lr,
        warmup=min(steps // 10, 20),
        seed=seed,
        device=device,
        progress=progress,
    )
    return Discriminator(base, result.adapter, task), result
