"""Run a mixture of frozen LoRA experts on a HF causal LM: the X-LoRA forward (ALGORITHMS §5.2).

Every forward of the wrapped model becomes two passes:

1. **Scaling pass** (no grad): the base model alone (experts off, i.e. PEFT's scaling pass with
   the adapters disabled) gives the last hidden state ``h`` (B, T, H).
2. **Gate**: ``gate(h, prompt_mask)`` -> scalings (B, T or 1, L, n); ``post`` applies top-k and
   the global weight (``merging.mixture_gate.effective``).
3. **Mixed pass**: each adapted Linear ℓ outputs ``W0 x + Σ_i λ_{ℓ,i} s_i B_i A_i x``. The
   experts of a module are stacked along the rank, ``A = [A_1; ...; A_n]`` (R, d_in) and
   ``B = [B_1 ... B_n]`` (d_out, R), so the sum is two matmuls with λ spread over the rank
   rows: ``((x A^T) ⊙ (λ s)[owner]) B^T``. Scaling the input of expert i (X-LoRA) or its
   rank-space activations (here) is the same by linearity (LoRA dropout is 0 at inference).

Generation keeps the KV cache: with ``prompt`` routing the scalings of the first (prompt) pass are
reused for every generated token; with ``token`` routing the scaling pass keeps its own cache of
the base model (the "dual KV cache" of mistral.rs), so each new token costs one base step plus one
mixed step instead of two full re-encodings (PEFT forces ``use_cache=False``).

The gate is any callable; this module knows nothing of how it is built (``merging`` owns it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from generation.apply import LoraFactors, _factors, _target
from hub.core.errors import BadInputError

Gate = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # h, prompt_mask -> λ
Post = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Stack:
    """One module's experts stacked along the rank."""

    layer: nn.Linear
    index: int  # ℓ, the module's position in the scalings
    a: torch.Tensor  # (R, d_in)
    b: torch.Tensor  # (d_out, R)
    owner: torch.Tensor  # (R,) expert of each rank row
    scale: torch.Tensor  # (R,) that expert's LoRA scaling s_i


def _stack(
    model: nn.Module, name: str, index: int, experts: Sequence[Mapping[str, LoraFactors]]
) -> _Stack:
    layer = _target(model, name)
    a_parts, b_parts, owners, scales = [], [], [], []
    for i, modules in enumerate(experts):
        factors = modules.get(name)
        if factors is None:  # this expert does not adapt the module: it is skipped here
            continue
        a, b = _factors(layer, name, factors)
        a_parts.append(a)
        b_parts.append(b)
        owners += [i] * a.shape[0]
        scales += [float(factors.scaling)] * a.shape[0]
    if not a_parts:
        raise BadInputError(f"no expert adapts module {name!r}", code="mixture_module_unused")
    device, dtype = layer.weight.device, layer.weight.dtype
    return _Stack(
        layer=layer,
        index=index,
        a=torch.cat(a_parts, dim=0),
        b=torch.cat(b_parts, dim=1),
        owner=torch.tensor(owners, dtype=torch.long, device=device),
        scale=torch.tensor(scales, dtype=dtype, device=device),
    )


def module_order(model: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` in the model's module-traversal order: PEFT numbers X-LoRA layers this way."""
    wanted = set(names)
    ordered = [n for n, _ in model.named_modules() if n in wanted]
    missing = sorted(wanted - set(ordered))
    if missing:
        raise BadInputError(
            f"expert module {missing[0]!r} does not exist in the base model",
            code="incompatible_base_model",
        )
    return ordered


class MixtureRuntime:
    """Frozen experts + a gate, attachable to a model (the evaluator's ``attach`` protocol).

    ``latest_scalings`` is the last dense prediction (B, T, L, n), like PEFT's
    ``get_latest_scalings``; ``force`` replaces the gate by fixed scalings (tests, analysis).
    """

    def __init__(
        self,
        experts: Sequence[Mapping[str, LoraFactors]],
        modules: Sequence[str],
        gate: Gate,
        *,
        routing: str,
        post: Post | None = None,
    ) -> None:
        if routing not in ("prompt", "token"):
            raise BadInputError(f"unknown routing {routing!r}; use prompt or token")
        self.experts = list(experts)
        self.modules = list(modules)
        self.gate, self.routing = gate, routing
        self.post = post or (lambda s: s)
        self.latest_scalings: torch.Tensor | None = None
        self.forced: torch.Tensor | None = None  # (B|1, T|1, L, n) used instead of the gate
        self.prompt_mask: torch.Tensor | None = None  # training: which tokens are the prompt
        self._current: torch.Tensor | None = None  # effective λ of the running forward
        self._kept: torch.Tensor | None = None  # prompt routing: λ of the prompt, for decoding
        self._scaling_cache: Any = None  # token routing: the base model's own KV cache
        self._in_scaling_pass = False

    # -- attaching ---------------------------------------------------------------------------
    @contextmanager
    def attach(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block ``model`` computes the mixture. Checked before any hook is set."""
        stacks = [
            _stack(model, name, i, self.experts)
            for i, name in enumerate(module_order(model, self.modules))
        ]
        if [s.layer for s in stacks] != [_target(model, n) for n in self.modules]:
            raise BadInputError(
                "mixture modules are not in the model's module order", code="mixture_order"
            )
        handles = [model.register_forward_pre_hook(self._before, with_kwargs=True)]
        try:
            handles += [s.layer.register_forward_hook(self._hook(s)) for s in stacks]
            yield model
        finally:
            for handle in handles:
                handle.remove()
            self._current = self._kept = self._scaling_cache = None

    def _hook(self, stack: _Stack) -> Callable[..., torch.Tensor]:
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            lam = self._current
            if self._in_scaling_pass or lam is None:
                return output
            x = inputs[0]  # (B, T, d_in)
            weights = lam[:, :, stack.index, :].to(stack.a.dtype)  # (B, T|1, n)
            per_rank = weights.index_select(-1, stack.owner) * stack.scale  # (B, T|1, R)
            z = x.to(stack.a.dtype) @ stack.a.T  # (B, T, R)
            return output + ((z * per_rank) @ stack.b.T).to(output.dtype)  # (B, T, d_out)

        return hook

    # -- the scaling pass and the gate -------------------------------------------------------
    def _before(self, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._in_scaling_pass:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise BadInputError("a mixture needs input_ids (inputs_embeds are not supported)")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        decoding = cache is not None and cache.get_seq_length() > 0
        if self.forced is not None:
            scalings = self.forced.to(input_ids.device)
        elif self.routing == "prompt" and decoding and self._kept is not None:
            self._current = self._kept
            return
        else:
            scalings = self._predict(model, input_ids, kwargs, cache, decoding)
        # (B, T, L, n) as X-LoRA reports them; a prompt-routed row repeats over its tokens
        self.latest_scalings = scalings.expand(-1, input_ids.shape[1], -1, -1)
        self._current = self.post(scalings)
        self._kept = self._current if self.routing == "prompt" else None

    def _predict(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        kwargs: dict[str, Any],
        cache: Any,
        decoding: bool,
    ) -> torch.Tensor:
        mask = kwargs.get("attention_mask")
        if self.routing == "token" and cache is not None and not decoding:
            from transformers import DynamicCache

            self._scaling_cache = DynamicCache(config=getattr(model, "config", None))
        own_cache = self._scaling_cache if (self.routing == "token" and cache is not None) else None
        if decoding and own_cache is None:
            raise BadInputError("decoding step without the scaling pass's cache")
        hidden = self.hidden_states(
            model, input_ids, mask, position_ids=kwargs.get("position_ids"), cache=own_cache
        )
        prompt_mask = self.prompt_mask if self.prompt_mask is not None else mask
        if prompt_mask is not None and prompt_mask.shape[1] != input_ids.shape[1]:
            prompt_mask = prompt_mask[:, -input_ids.shape[1] :]
        return self.gate(hidden, prompt_mask)

    def hidden_states(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
    ) -> torch.Tensor:
        """The scaling pass: the base model's last hidden state (B, T, H), experts off."""
        wrapped: Any = model
        decoder = wrapped.get_decoder() if hasattr(wrapped, "get_decoder") else wrapped.base_model
        self._in_scaling_pass = True
        try:
            with torch.no_grad():
                out = decoder(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    cache=cache,
                    use_cache=cache is not None,
                )
        finally:
            self._in_scaling_pass = False
        return out.last_hidden_state


def one_hot_scalings(expert: int, n_experts: int, n_modules: int) -> torch.Tensor:
    """(1, 1, L, n) scalings selecting one expert everywhere (tests, ``force``)."""
    lam = np.zeros((1, 1, n_modules, n_experts), dtype=np.float32)
    lam[..., expert] = 1.0
    return torch.from_numpy(lam)
