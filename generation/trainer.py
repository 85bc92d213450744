"""Train one LoRA adapter on a task with the zoo recipe (shared/zoo/README.md, Recipe).

AdamW (weight decay 0), linear warm-up then linear decay to 0, gradient clipping, loss on the
answer tokens (+ ``answer_end_id``) only, one random description per example, dropout 0, PEFT's
default init, everything seeded. On CUDA the base weights are bf16 and the LoRA weights fp32
under bf16 autocast; on CPU all fp32. Training runs on a deep copy of the base model, so the
shared ``LoadedBase.model`` is never wrapped or changed.
"""

from __future__ import annotations

import copy
import enum
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from generation.answer_loss import answer_only_loss
from generation.base_models import LoadedBase
from generation.device import resolve_device
from generation.prompting import IGNORE_INDEX, encode_prompt, training_example
from generation.tasks import Example, Task
from hub.core.errors import BadInputError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule

# progress(step, steps, loss) after every optimizer step (1-based step).
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainResult:
    adapter: LoraAdapter
    peft_config: dict[str, Any]
    recipe: dict[str, Any]
    final_loss: float
    losses: list[float] = field(repr=False)
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (input_ids, labels) rows; padding is masked out and never scored."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (batch, width)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def example_batches(
    base: LoadedBase, task: Task, examples: list[Example], batch: int, rng: random.Random
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches: reshuffle every epoch, draw one description per example."""
    tok, spec = base.tokenizer, base.spec
    answers = [list(tok(ex.output, add_special_tokens=False).input_ids) for ex in examples]
    order: list[int] = []
    while True:
        if len(order) < batch:
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        picked, order = order[:batch], order[batch:]
        rows = []
        for i in picked:
            text = task.render(examples[i].input, rng.choice(task.descriptions))
            prompt = encode_prompt(tok, text, add_bos=spec.add_bos)
            rows.append(training_example(prompt, answers[i], spec.answer_end_id))
        yield collate(rows, spec.pad_token_id)


def json_safe(value: Any) -> Any:
    """LoraConfig.to_dict() values -> JSON: sets become sorted lists, enums their values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(json_safe(v) for v in value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _peft_model(base: LoadedBase, config: Any, device: torch.device) -> Any:
    from peft import get_peft_model

    model = copy.deepcopy(base.model)  # the shared base stays untouched
    if device.type == "cuda":
        model.to(dtype=torch.bfloat16)
    model.to(device)
    model.config.use_cache = False  # no KV cache in training
    # PEFT records the model's name_or_path (here the cache dir) in its config; use the hub id.
    model.config._name_or_path = base.spec.hf_id
    model.name_or_path = base.spec.hf_id
    # autocast_adapter_dtype keeps the LoRA weights fp32 over a bf16 base.
    return get_peft_model(model, config, autocast_adapter_dtype=True)


def extract_adapter(peft_model: Any, base: LoadedBase, alpha: float, rslora: bool) -> LoraAdapter:
    from peft.tuners.lora import LoraLayer

    modules = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            lora_a: Any = module.lora_A["default"]  # nn.ModuleDict items: stubs say Tensor
            lora_b: Any = module.lora_B["default"]
            a = lora_a.weight.detach().float().cpu().numpy()  # (r, d_in)
            b = lora_b.weight.detach().float().cpu().numpy()  # (d_out, r)
            key = name.removeprefix("base_model.model.")
            modules[key] = LoraModule(A=a.copy(), B=b.copy(), alpha=alpha, use_rslora=rslora)
    ref = BaseModelRef(model_id=base.spec.hf_id, fingerprint=base.fingerprint)
    return LoraAdapter(base=ref, modules=modules)


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, steps: int) -> Any:
    # Linear warm-up from 0, then linear decay to 0 at `steps` (HF's linear schedule).
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _check(rank: int, steps: int, batch: int, lr: float) -> None:
    if rank < 1 or steps < 1 or batch < 1 or not lr > 0:  # `not >` also refuses NaN
        raise BadInputError(
            f"rank, steps and batch must be >= 1 and lr > 0 (got rank={rank}, steps={steps}, "
            f"batch={batch}, lr={lr})"
        )


def train_lora(
    loaded_base: LoadedBase,
    task: Task,
    *,
    rank: int,
    alpha: float | None = None,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    steps: int,
    lr: float = 1e-3,
    batch: int = 32,
    warmup: int = 20,
    seed: int,
    device: str = "auto",
    grad_clip: float = 1.0,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a LoRA of ``rank`` on ``task``'s train split and return it as a LoraAdapter."""
    from peft import LoraConfig

    _check(rank, steps, batch, lr)
    examples = task.split("train")
    alpha = float(2 * rank if alpha is None else alpha)
    target = resolve_device(device)
    start = time.perf_counter()
    seed_everything(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # PEFT annotates int; float alphas work
        target_modules=sorted(targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=loaded_base.spec.hf_id,
    )
    model = _peft_model(loaded_base, config, target)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = _schedule(optimizer, warmup, steps)
    batches = example_batches(loaded_base, task, examples, batch, random.Random(seed))
    losses: list[float] = []
    for step in range(1, steps + 1):
        inputs = {k: v.to(target) for k, v in next(batches).items()}
        with torch.autocast(target.type, dtype=torch.bfloat16, enabled=target.type == "cuda"):
            # Mean over answer tokens; only those positions reach lm_head (vocab-sized logits
            # for every position would dominate memory with Gemma's 262k vocabulary).
            loss = answer_only_loss(model, inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, steps, losses[-1])
    adapter = extract_adapter(model, loaded_base, alpha, config.use_rslora)
    peft_config = json_safe(config.to_dict())
    peft_config["inference_mode"] = True  # as PEFT writes it on save
    recipe = {
        "steps": steps, "batch": batch, "lr": lr, "warmup": warmup, "seed": seed,
        "rank": rank, "lora_alpha": alpha, "target_modules": sorted(targets),
        "grad_clip": grad_clip, "weight_decay": 0.0, "schedule": "linear",
        "device": target.type, "dtype": "bf16-autocast" if target.type == "cuda" else "fp32",
        "base_model": loaded_base.spec.name, "base_fingerprint": loaded_base.fingerprint,
    }  # fmt: skip
    del model, optimizer  # free the copy before returning
    return TrainResult(
        adapter=adapter,
        peft_config=peft_config,
        recipe=recipe,
        final_loss=losses[-1],
        losses=losses,
        seconds=time.perf_counter() - start,
    )
