"""Tiny random Llama + byte-level tokenizer: a LoadedBase that runs the generation code in
milliseconds. Imported by the other test_generation_* modules; its own tests check the helper."""

from __future__ import annotations

from pathlib import Path

import torch

from generation.base_models import LoadedBase
from generation.base_models.spec import BaseModelSpec
from generation.tasks import Task

SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 like SmolLM2: bos 1, eos/pad 2


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(alphabet))}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def tiny_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,  # peaked logits: a LoRA on q/v can move them within a few steps
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


TINY_SPEC = BaseModelSpec(
    name="tiny-llama",
    hf_id="test/tiny-llama",
    architecture="LlamaForCausalLM",
    locate_gguf=lambda _cache: Path("/nonexistent.gguf"),
    expected_sha256=None,
    pad_token_id=2,
    stop_token_ids=(1, 2),
    answer_end_id=1,
    add_bos=False,
    install_hint="(test model)",
    summary="tiny random Llama for tests",
)


def tiny_base(seed: int = 0) -> LoadedBase:
    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer), seed)
    return LoadedBase(
        spec=TINY_SPEC,
        model=model,
        tokenizer=tokenizer,
        fingerprint="0" * 64,
        config=model.config.to_dict(),
        device=torch.device("cpu"),
        cache_path=Path("/nonexistent"),
    )


def tiny_task(n_train: int = 64, n_eval: int = 12) -> Task:
    """Copy-the-first-letter task: learnable by a tiny model in a few dozen steps."""
    words = ["apple", "berry", "cedar", "delta", "ember", "fjord", "grape", "heron"]
    rows = [{"input": w + str(i), "output": w[0].upper()} for i, w in enumerate(words * 20)]
    return Task(
        name="first_letter",
        descriptions=["Give the first letter.", "First letter, uppercase?"],
        train=rows[:n_train],
        eval=rows[n_train : n_train + n_eval],
    )


def test_tiny_tokenizer_round_trips_without_special_tokens():
    tok = tiny_tokenizer()
    text = "### Input:\nhé {x}\n"
    ids = tok(text, add_special_tokens=False).input_ids
    assert min(ids) >= len(SPECIALS)
    assert tok.decode(ids) == text
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2


def test_tiny_base_generates():
    base = tiny_base()
    out = base.model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)
