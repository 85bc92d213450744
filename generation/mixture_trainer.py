"""Train an X-LoRA gate over frozen experts on their tasks' train splits.

Two objectives:

- ``lm`` (X-LoRA as published): the causal-LM loss of the mixed model on the answer tokens
  (zoo protocol: answer + ``answer_end_id``), back-propagated into the gate only. Each step costs a
  scaling pass plus a forward and backward of the whole model.
- ``route``: the experts are task experts and each training example comes from one expert's
  task, so the gate can be fitted directly to pick that expert (cross-entropy of its softmax
  against the example's expert). The scaling pass runs once per example (no backward through the
  model) and the gate then trains on the cached hidden states: minutes of CPU become seconds.

Either way the base model and the experts stay frozen: ``lm`` trains on a deep copy of the base
with every parameter's ``requires_grad`` off, and only the gate's parameters reach the optimizer.
Batches are balanced: example ``j`` of a batch comes from expert ``j mod n``.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from generation.base_models import LoadedBase
from generation.mixing import MixtureRuntime
from generation.prompting import IGNORE_INDEX, encode_prompt, training_example
from generation.tasks import Task
from generation.trainer import _schedule, collate, seed_everything
from hub.core.errors import BadInputError

# progress(fraction 0..1, loss or None, message)
Progress = Callable[[float, float | None, str], None]
RouteLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
OBJECTIVES = ("lm", "route")


@dataclass(frozen=True)
class GateTrainResult:
    losses: list[float] = field(repr=False)
    seconds: float
    examples: int
    recipe: dict[str, Any]


@dataclass(frozen=True)
class GateTraining:
    objective: str = "route"
    steps: int = 200
    batch: int = 8
    lr: float = 2e-3
    warmup: int = 10
    examples: int = 32  # per expert, route objective
    seed: int = 0

    def check(self) -> None:
        if self.objective not in OBJECTIVES:
            raise BadInputError(
                f"unknown objective {self.objective!r}; use one of {', '.join(OBJECTIVES)}",
                code="unknown_objective",
            )
        if min(self.steps, self.batch, self.examples) < 1 or self.lr <= 0 or self.warmup < 0:
            raise BadInputError(
                "steps, batch and examples must be >= 1, lr > 0 and warmup >= 0 (got "
                f"steps={self.steps}, batch={self.batch}, examples={self.examples}, "
                f"lr={self.lr}, warmup={self.warmup})",
                code="invalid_training",
            )


def _rows(
    base: LoadedBase, tasks: Sequence[Task], picks: Sequence[tuple[int, int]], rng: random.Random
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) for (expert, example index) picks, one random description each."""
    tok, spec = base.tokenizer, base.spec
    rows = []
    for expert, i in picks:
        task = tasks[expert]
        ex = task.split("train")[i]
        prompt = encode_prompt(
            tok, task.render(ex.input, rng.choice(task.descriptions)), add_bos=spec.add_bos
        )
        answer = list(tok(ex.output, add_special_tokens=False).input_ids)
        rows.append(training_example(prompt, answer, spec.answer_end_id))
    return rows


def _balanced_picks(
    tasks: Sequence[Task], count: int, rng: random.Random
) -> Iterator[tuple[int, int]]:
    """Endless (expert, example) picks: experts in turn, each expert's examples reshuffled per
    epoch."""
    orders: list[list[int]] = [[] for _ in tasks]
    j = 0
    while True:
        expert = j % len(tasks)
        if not orders[expert]:
            orders[expert] = list(range(min(count, len(tasks[expert].split("train")))))
            rng.shuffle(orders[expert])
        yield expert, orders[expert].pop()
        j += 1


def _batch(
    base: LoadedBase,
    rows: list[tuple[list[int], list[int]]],
    experts: list[int],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    batch = {k: v.to(device) for k, v in collate(rows, base.spec.pad_token_id).items()}
    batch["prompt_mask"] = (batch["labels"] == IGNORE_INDEX) & (batch["attention_mask"] == 1)
    batch["experts"] = torch.tensor(experts, dtype=torch.long, device=device)
    return batch


def train_gate(
    base: LoadedBase,
    runtime: MixtureRuntime,
    gate: nn.Module,
    tasks: Sequence[Task],
    training: GateTraining,
    *,
    route_loss: RouteLoss,
    temperature: float = 1.0,
    progress: Progress | None = None,
) -> GateTrainResult:
    """Fit ``gate`` (the module behind ``runtime.gate``) so the mixture solves ``tasks``
    (``tasks[i]`` is expert i's). ``route_loss`` scores gate logits against expert ids."""
    training.check()
    if len(tasks) != len(runtime.experts):
        raise BadInputError(f"{len(tasks)} tasks for {len(runtime.experts)} experts")
    start = time.perf_counter()
    seed_everything(training.seed)
    gate.to(base.device).train()
    fit: Fit = _fit_lm if training.objective == "lm" else _fit_route
    losses = fit(base, runtime, gate, tasks, training, route_loss, temperature, progress)
    gate.eval()
    recipe = {
        "objective": training.objective,
        "steps": training.steps,
        "lr": training.lr,
        "warmup": training.warmup,
        "seed": training.seed,
        "device": base.device.type,
        "batch": training.batch if training.objective == "lm" else None,
        "examples_per_expert": training.examples if training.objective == "route" else None,
        "tasks": [t.name for t in tasks],
        "base_model": base.spec.name,
        "base_fingerprint": base.fingerprint,
    }
    examples = (
        training.steps * training.batch
        if training.objective == "lm"
        else training.examples * len(tasks)
    )
    return GateTrainResult(losses, time.perf_counter() - start, examples, recipe)


def _optimizer(gate: nn.Module, training: GateTraining) -> tuple[torch.optim.Optimizer, Any]:
    params = [p for p in gate.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=training.lr, weight_decay=0.0)
    return optimizer, _schedule(optimizer, min(training.warmup, training.steps), training.steps)


Fit = Callable[
    [
        LoadedBase,
        MixtureRuntime,
        Any,
        Sequence[Task],
        GateTraining,
        RouteLoss,
        float,
        Progress | None,
    ],
    list[float],
]


def _fit_lm(
    base: LoadedBase,
    runtime: MixtureRuntime,
    gate: Any,
    tasks: Sequence[Task],
    training: GateTraining,
    _route_loss: RouteLoss,
    _temperature: float,
    progress: Progress | None,
) -> list[float]:
    model = copy.deepcopy(base.model)  # hooks and frozen flags never touch the shared model
    model.requires_grad_(False)
    model.config.use_cache = False
    rng = random.Random(training.seed)
    picks = _balanced_picks(tasks, 10**9, rng)
    optimizer, scheduler = _optimizer(gate, training)
    losses: list[float] = []
    device = base.device
    with runtime.attach(model):
        for step in range(1, training.steps + 1):
            chosen = [next(picks) for _ in range(training.batch)]
            batch = _batch(base, _rows(base, tasks, chosen, rng), [e for e, _ in chosen], device)
            runtime.prompt_mask = batch.pop("prompt_mask")
            batch.pop("experts")
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(gate.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step / training.steps, losses[-1], f"step {step}/{training.steps}")
    runtime.prompt_mask = None
    del model
    return losses


def _features(
    base: LoadedBase,
    runtime: MixtureRuntime,
    tasks: Sequence[Task],
    training: GateTraining,
    progress: Progress | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaling-pass hidden states of ``examples`` train examples per expert: (N, T, H) padded,
    the mask of the tokens the gate is trained on (N, T), and expert ids (N,)."""
    rng = random.Random(training.seed)
    total = training.examples * len(tasks)
    picks = _balanced_picks(tasks, training.examples, rng)
    chosen = [next(picks) for _ in range(total)]
    hidden, masks, experts = [], [], []
    chunk = 16
    for start in range(0, total, chunk):
        part = chosen[start : start + chunk]
        batch = _batch(base, _rows(base, tasks, part, rng), [e for e, _ in part], base.device)
        h = runtime.hidden_states(base.model, batch["input_ids"], batch["attention_mask"])
        train_on = (
            batch["prompt_mask"] if runtime.routing == "prompt" else batch["attention_mask"] == 1
        )
        hidden.append(h.float().cpu())
        masks.append(train_on.cpu())
        experts.append(batch["experts"].cpu())
        if progress is not None:
            done = start + len(part)
            progress(0.9 * done / total, None, f"scaling pass {done}/{total} examples")
    width = max(h.shape[1] for h in hidden)
    pad = [nn.functional.pad(h, (0, 0, 0, width - h.shape[1])) for h in hidden]
    mpad = [nn.functional.pad(m, (0, width - m.shape[1])) for m in masks]
    return torch.cat(pad), torch.cat(mpad), torch.cat(experts)


def _fit_route(
    base: LoadedBase,
    runtime: MixtureRuntime,
    gate: Any,
    tasks: Sequence[Task],
    training: GateTraining,
    route_loss: RouteLoss,
    temperature: float,
    progress: Progress | None,
) -> list[float]:
    hidden, mask, experts = _features(base, runtime, tasks, training, progress)
    device = next(gate.parameters()).device
    hidden, mask, experts = hidden.to(device), mask.to(device), experts.to(device)
    optimizer, scheduler = _optimizer(gate, training)
    losses: list[float] = []
    for step in range(1, training.steps + 1):
        logits = gate.logits(hidden, mask) / temperature  # (N, T', L, n)
        token_mask = None if runtime.routing == "prompt" else mask
        loss = route_loss(logits, experts, token_mask)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(0.9 + 0.1 * step / training.steps, losses[-1], f"gate step {step}")
    return losses
