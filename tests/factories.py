"""Synthetic PEFT adapter directories for fast tests (no torch, no base model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from storage.safetensors_io import serialize_safetensors

TINY_BASE = "tiny-llama"
# A 2-layer Llama-shaped base: hidden 64, 4 heads x 16, 2 kv heads, intermediate 128.
TINY_CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
}
TINY_SHAPES = {"q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64)}


def peft_config(r: int = 4, alpha: int = 8, targets=("q_proj", "v_proj"), base=TINY_BASE, **kw):
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": r,
        "lora_alpha": alpha,
        "target_modules": list(targets),
        "bias": "none",
        "use_dora": False,
        "use_rslora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    cfg.update(kw)
    return cfg


def make_tensors(r=4, layers=2, targets=("q_proj", "v_proj"), seed=0, shapes=TINY_SHAPES):
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(layers):
        for t in targets:
            d_in, d_out = shapes[t]
            key = f"base_model.model.model.layers.{i}.self_attn.{t}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((r, d_in)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((d_out, r)).astype(np.float32)
    return tensors


def write_adapter_dir(path: Path, tensors=None, config=None, **kw) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = make_tensors(**kw) if tensors is None else tensors
    config = (
        peft_config(r=kw.get("r", 4), targets=kw.get("targets", ("q_proj", "v_proj")))
        if config is None
        else config
    )
    (path / "adapter_config.json").write_text(json.dumps(config))
    (path / "adapter_model.safetensors").write_bytes(serialize_safetensors(tensors))
    return path


def tiny_llama(seed: int = 0, **overrides):
    """The 2-layer Llama of TINY_CONFIG, seeded, in eval mode (torch imported lazily so the
    catalog tests stay light)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    fields = {k: v for k, v in TINY_CONFIG.items() if k not in ("model_type", "architectures")}
    return LlamaForCausalLM(LlamaConfig(**{**fields, **overrides})).eval()
