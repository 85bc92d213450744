"""Two tiny experts on two toy tasks, registered in a catalog, for the mixture tests.

The tasks differ only in their description (first vs last letter of a word), so a gate has to
read the prompt to route. The tiny model of ``test_generation_tiny`` stands in for the base model:
``use_tiny_base`` makes the model service resolve and load it without any GGUF.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

from generation.tasks import Task
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from hub.core.models import AdapterMeta
from hub.services.registry import as_published
from storage.peft_format import peft_config_for
from tests.test_generation_tiny import TINY_SPEC, tiny_base

WORDS = ["apple", "berry", "cedar", "delta", "ember", "fjord", "grape", "heron", "igloo", "joker"]


def toy_task(name: str, pick: int, description: str) -> Task:
    rows = [{"input": f"{w}{i}", "output": w[pick].upper()} for i, w in enumerate(WORDS * 8)]
    return Task(name=name, descriptions=[description], train=rows[:64], eval=rows[64:80])


TASKS = {
    "first": toy_task("first", 0, "Give the first letter of the word, uppercase."),
    "last": toy_task("last", -1, "Which character ends this token? Reply in CAPITALS!"),
    "third": toy_task("third", 2, "3rd symbol; upper case; nothing else; be quick; ok?"),
}


@cache
def base():
    return tiny_base()


def expert(task: str, rank: int = 4):
    """A random expert on every q/v projection of the tiny base (training one costs a minute
    of shared CPU; the gate tests need distinct experts, not good ones)."""
    seed = sorted(TASKS).index(task) + 1
    rng = np.random.default_rng(seed)
    modules = {}
    for layer in range(2):
        for proj, d_out in (("q_proj", 32), ("v_proj", 16)):
            modules[f"model.layers.{layer}.self_attn.{proj}"] = LoraModule(
                A=(rng.standard_normal((rank, 32)) * 0.3).astype(np.float32),
                B=(rng.standard_normal((d_out, rank)) * 0.3).astype(np.float32),
                alpha=2.0 * rank,
            )
    adapter = LoraAdapter(BaseModelRef(TINY_SPEC.hf_id), modules)
    config = peft_config_for(adapter, base_model_name_or_path=TINY_SPEC.hf_id)
    return adapter, config


def use_tiny_base(monkeypatch, container=None) -> None:
    """Make ``test/tiny-llama`` a loadable base model (process-wide, undone by monkeypatch)."""
    from generation import base_models
    from hub.services.models import ModelService

    monkeypatch.setitem(base_models.BASE_MODELS, TINY_SPEC.name, TINY_SPEC)
    monkeypatch.setattr(ModelService, "load", lambda self, name, device="auto": base())


def write_task(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(TASKS[name].model_dump(mode="json")))
    return path


def register_experts(container, names=("first", "last"), *, with_task=False) -> list[str]:
    """Register the toy experts as ``NAME-expert``; ``with_task`` records their task."""
    labels = []
    for name in names:
        adapter, config = expert(name)
        meta = AdapterMeta(name=f"{name}-expert", description=TASKS[name].descriptions[0])
        added = container.registry.add_parsed(
            as_published(adapter, config),
            meta,
            source="trained",
            metadata={"task": name} if with_task else {},
        )
        labels.append(f"{added.item.name}@{added.item.version}")
    return labels
