"""Two tiny, different base models for Trans-LoRA tests, wired into a Container.

The source is the tiny Llama of ``test_generation_tiny`` (SmolLM2's special ids: bos 1,
eos/pad 2, no BOS added); the target is a wider Llama with Gemma's special ids (pad 0, eos 1,
bos 2, BOS added). The generator's rounds are replaced by a fixed candidate stream (a random tiny
model cannot continue a list): real-looking inputs and junk, so the discriminator has something
to tell apart. Everything else runs for real.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from generation.base_models import BASE_MODELS, LoadedBase
from generation.tasks import Task
from generation.trainer import train_lora
from hub.core.models import AdapterMeta
from hub.services.registry import as_published
from tests.test_generation_tiny import TINY_SPEC, tiny_base, tiny_task

TARGET_SPEC = replace(
    TINY_SPEC,
    name="tiny-target",
    hf_id="test/tiny-target",
    pad_token_id=0,
    stop_token_ids=(1,),
    answer_end_id=1,
    add_bos=True,
)


def gemma_like_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def tiny_target_base(seed: int = 1) -> LoadedBase:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = gemma_like_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=0.3, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    return LoadedBase(
        spec=TARGET_SPEC,
        model=model,
        tokenizer=tokenizer,
        fingerprint="1" * 64,
        config=model.config.to_dict(),
        device=torch.device("cpu"),
        cache_path=Path("/nonexistent"),
    )


WORDS = ["apple", "berry", "cedar", "delta", "ember", "fjord", "grape", "heron"]


def candidate_stream(index: int) -> list[str]:
    """Round ``index`` of the fake generator: 4 task-like inputs and 4 junk strings."""
    like = [f"{WORDS[(index + k) % 8]}{100 + 4 * index + k}" for k in range(4)]
    junk = [f"%%{index}-{k}" for k in range(4)]
    return like + junk


@pytest.fixture(name="tiny_models")
def tiny_models_fixture(monkeypatch):
    """Registers the two tiny specs as loadable base models, fakes the generator's rounds and
    makes ``ModelService.load`` hand out the tiny bases. Returns the loaded bases by name."""
    from generation.translora import synthesis
    from hub.services.models import ModelService

    bases = {TINY_SPEC.name: tiny_base(), TARGET_SPEC.name: tiny_target_base()}
    monkeypatch.setitem(BASE_MODELS, TINY_SPEC.name, TINY_SPEC)
    monkeypatch.setitem(BASE_MODELS, TARGET_SPEC.name, TARGET_SPEC)
    monkeypatch.setattr(ModelService, "load", lambda self, name, device="auto": bases[name])
    monkeypatch.setattr(synthesis.ListSampler, "round", lambda self, i: candidate_stream(i))
    return bases


def write_task(path: Path, task: Task | None = None) -> Path:
    path.write_text(json.dumps((task or tiny_task()).model_dump()))
    return path


def register_source(container, base: LoadedBase, task_path: Path, name: str = "src", **meta):
    """A LoRA trained a few steps on the tiny source base, registered with its task file."""
    task = tiny_task()
    result = train_lora(base, task, rank=4, steps=6, batch=8, lr=1e-2, warmup=1, seed=0,
                        device="cpu")  # fmt: skip
    if container.registry.catalog.get_base_model(base.spec.hf_id) is None:
        container.registry.register_base_model(
            base.spec.hf_id, base.config, fingerprint=base.fingerprint
        )
    config = {**result.peft_config, "base_model_name_or_path": base.spec.hf_id}
    metadata = {"task": str(task_path), **meta} if task_path else dict(meta)
    return container.registry.add_parsed(
        as_published(result.adapter, config),
        AdapterMeta(name=name, description="Give the first letter."),
        source="trained",
        metadata=metadata,
    ).item
