"""Causal-LM loss computed on the answer positions only.

``model(**batch).loss`` projects every position onto the vocabulary before the labels mask most
of them away: a (batch, width, vocab) logits tensor, plus its gradient. With Gemma-3's 262,144
tokens that is ~1 GiB per 32 x 32 tokens in fp32. Here the decoder runs as usual, but only the
hidden states that predict a scored label reach ``lm_head``: (n_answer_tokens, vocab). The value
is the same as HF's loss (mean cross-entropy over labels != -100, next-token shifted, logits in
fp32, Gemma's final soft-capping applied when configured).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from generation.prompting import IGNORE_INDEX


def causal_lm_of(model: Any) -> Any:
    """The ``*ForCausalLM`` inside a PEFT wrapper (LoRA layers stay injected), or the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_logits(causal_lm: Any, hidden: torch.Tensor) -> torch.Tensor:
    """``lm_head`` (+ final soft-capping, as the model's own forward does) on some hidden
    states: (n, hidden) -> (n, vocab), fp32."""
    logits = causal_lm.lm_head(hidden)
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


def answer_only_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions of ``batch``
    (``input_ids``, ``attention_mask``, ``labels``), as ``model(**batch).loss`` computes it."""
    causal_lm = causal_lm_of(model)
    hidden = causal_lm.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state  # (batch, width, hidden)
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    scored = targets != IGNORE_INDEX  # (batch, width - 1)
    logits = answer_logits(causal_lm, hidden[:, :-1][scored])  # (n_scored, vocab)
    return F.cross_entropy(logits, targets[scored])
