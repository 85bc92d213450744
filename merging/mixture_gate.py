"""X-LoRA gate: the classifier that turns hidden states into per-expert scalings (ALGORITHMS §5).

The gate reads the scaling pass's last hidden state ``h`` (B, T, H) and predicts scalings
``λ`` (B, T, L, n): L adapted modules, n experts. Its layers are PEFT's ``XLoraClassifier``
layers, built in the same order under the same names (``layers.<i>``), so a trained gate exports
to a directory PEFT's X-LoRA loads (``PEFT_CLASSIFIER_PREFIX``).

Two routings:

- ``token`` (X-LoRA as published): one prediction per token, from that token's hidden state.
- ``prompt``: one prediction per sequence, from the mean hidden state of its prompt tokens,
  broadcast to every token. The experts are task experts, and the prompt names the task; the
  answer tokens carry little routing signal, and generation can keep one set of scalings and use
  the KV cache. PEFT cannot express it, so such mixtures export in loradex's own format.

Experts and modules are plain indices here: the runtime (generation) and the service own names.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from hub.core.errors import BadInputError

PEFT_CLASSIFIER_PREFIX = "base_model.internal_xlora_classifier."
Routing = Literal["prompt", "token"]


class GateConfig(BaseModel):
    """Everything that shapes the gate and how its scalings are used (PEFT ``XLoraConfig``
    names in the field descriptions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experts: int = Field(ge=2, le=64, description="n, the number of experts")
    modules: list[str] = Field(min_length=1, description="adapted modules, in model order (L)")
    hidden_size: int = Field(ge=1, description="H of the base model (hidden_size)")
    routing: Routing = Field("prompt", description="one prediction per token or per prompt")
    depth: int = Field(1, ge=1, le=8, description="classifier depth (xlora_depth)")
    size: int = Field(256, ge=1, le=65536, description="hidden width at depth >= 2 (xlora_size)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout p (xlora_dropout_p)")
    layerwise: bool = Field(False, description="one prediction per module (layerwise_scalings)")
    softmax: bool = Field(True, description="softmax over experts (enable_softmax)")
    temperature: float = Field(1.0, gt=0.0, le=1e3, description="softmax_temperature")
    top_k: int | None = Field(None, ge=1, description="keep the k largest (top_k_lora)")
    softmax_topk: bool = Field(False, description="re-softmax the kept ones (enable_softmax_topk)")
    global_scaling: float = Field(1.0, description="global_scaling_weight")

    @model_validator(mode="after")
    def _consistent(self) -> GateConfig:
        if self.top_k is not None and self.top_k > self.experts:
            raise ValueError(f"top_k={self.top_k} exceeds the {self.experts} experts")
        if self.softmax_topk and self.top_k is None:
            raise ValueError("softmax_topk needs top_k")
        if len(set(self.modules)) != len(self.modules):
            raise ValueError("modules repeat a name")
        return self

    @property
    def outputs(self) -> int:
        return self.experts * (len(self.modules) if self.layerwise else 1)


def parse_gate_config(data: dict) -> GateConfig:
    from pydantic import ValidationError

    try:
        return GateConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'gate'}: {e['msg']}" for e in exc.errors()
        )
        raise BadInputError(f"invalid mixture gate: {problems}", code="invalid_gate") from None


def _classifier_layers(cfg: GateConfig) -> list[nn.Module]:
    """PEFT's layer list, in its order: [Linear, ReLU, (Dropout)] * (depth-1), Linear."""
    if cfg.depth == 1:
        return [nn.Linear(cfg.hidden_size, cfg.outputs)]
    layers: list[nn.Module] = []
    width_in = cfg.hidden_size
    for _ in range(cfg.depth - 1):
        layers += [nn.Linear(width_in, cfg.size), nn.ReLU()]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        width_in = cfg.size
    return [*layers, nn.Linear(cfg.size, cfg.outputs)]


def pool_prompt(hidden: torch.Tensor, prompt_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean hidden state over each row's prompt tokens: (B, T, H) -> (B, 1, H)."""
    if prompt_mask is None:
        return hidden.mean(dim=1, keepdim=True)
    weights = prompt_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    total = weights.sum(dim=1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
    return (hidden * weights).sum(dim=1, keepdim=True) / total


class XLoraGate(nn.Module):
    """The trainable classifier. ``forward`` gives the scalings (B, T or 1, L, n): with
    ``softmax`` each (token, module) row sums to 1. Top-k is applied by :func:`effective` at
    the modules, as in PEFT (so the logged scalings are the dense ones)."""

    def __init__(self, config: GateConfig, *, zero_init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.Sequential(*_classifier_layers(config))
        if zero_init:  # start from the uniform mixture (softmax of equal logits)
            last = self.layers[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def logits(self, hidden: torch.Tensor, prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, H) -> (B, T', L, n) logits; T' = 1 for prompt routing."""
        cfg = self.config
        if cfg.routing == "prompt":
            hidden = pool_prompt(hidden, prompt_mask)  # (B, 1, H)
        first = self.layers[0]
        assert isinstance(first, nn.Linear)
        raw = self.layers(hidden.to(first.weight.dtype))  # (B, T', n) or (B, T', L*n)
        b, t = raw.shape[:2]
        n_modules = len(cfg.modules)
        if not cfg.layerwise:
            return raw.unsqueeze(2).expand(b, t, n_modules, cfg.experts)
        return raw.reshape(b, t, n_modules, cfg.experts)

    def forward(
        self, hidden: torch.Tensor, prompt_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.logits(hidden, prompt_mask)
        if self.config.softmax:
            return torch.softmax(logits / self.config.temperature, dim=-1)
        return logits

    # -- storage: plain float32 arrays, named as PEFT names them --------------------------------
    def tensors(self) -> dict[str, np.ndarray]:
        return {
            k: v.detach().to("cpu", torch.float32).numpy().copy()
            for k, v in self.state_dict().items()
        }

    @classmethod
    def from_tensors(cls, config: GateConfig, tensors: dict[str, np.ndarray]) -> XLoraGate:
        gate = cls(config, zero_init=False)
        expected = {k: tuple(v.shape) for k, v in gate.state_dict().items()}
        got = {k: tuple(np.shape(v)) for k, v in tensors.items()}
        if expected != got:
            raise BadInputError(
                f"gate tensors do not match the gate config: expected {expected}, got {got}",
                code="invalid_gate",
            )
        gate.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
        return gate.eval()


def effective(scalings: torch.Tensor, config: GateConfig) -> torch.Tensor:
    """What the modules apply: top-k masking and the optional per-token re-softmax of PEFT
    (``get_maybe_topk_scalings``; per token, with -inf masking as in PEFT PR #2793), times
    ``global_scaling``. (B, T, L, n) -> same shape."""
    out = scalings
    if config.top_k is not None:
        top = torch.topk(out, k=config.top_k, dim=-1).indices
        keep = torch.zeros_like(out, dtype=torch.bool).scatter_(-1, top, True)
        out = out * keep.to(out.dtype)
    if config.softmax_topk:
        nonzero = out != 0
        out = torch.softmax(out.masked_fill(~nonzero, float("-inf")), dim=-1)
        out = out.masked_fill(~nonzero, 0.0)
    return out * config.global_scaling


def routing_loss(
    scalings_logits: torch.Tensor, expert: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy of the gate's expert choice against the expert whose task produced the
    example (``route`` objective), averaged over modules and the masked tokens.

    ``scalings_logits`` (B, T', L, n), ``expert`` (B,) int64, ``mask`` (B, T') or None.
    """
    b, t, n_modules, n = scalings_logits.shape
    target = expert.view(b, 1, 1).expand(b, t, n_modules)
    loss = nn.functional.cross_entropy(
        scalings_logits.reshape(-1, n), target.reshape(-1), reduction="none"
    ).view(b, t, n_modules)
    if mask is None:
        return loss.mean()
    weights = mask.to(loss.dtype).unsqueeze(-1).expand_as(loss)
    return (loss * weights).sum() / weights.sum().clamp_min(1.0)
