"""Apply LoRA factors to a HF model without PEFT wrapping, via forward hooks.

``applied(model, adapter)`` hooks every targeted ``nn.Linear`` so its output becomes
``y + s * (x @ A.T) @ B.T``, exactly what a PEFT LoRA layer computes with dropout 0
(``lora_B(lora_A(x)) * scaling``), and removes the hooks on exit. The base weights are never
touched, so one loaded base model can serve many adapters, one after another, without copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from hub.core.errors import IncompatibleBaseModelError


@runtime_checkable
class LoraFactors(Protocol):
    """One module's factors: ``A`` (r, d_in), ``B`` (d_out, r), ``scaling`` (alpha/r or
    alpha/sqrt(r), already folded in by :class:`hub.core.lora.LoraModule`)."""

    @property
    def A(self) -> np.ndarray: ...

    @property
    def B(self) -> np.ndarray: ...

    @property
    def scaling(self) -> float: ...


@runtime_checkable
class AdapterLike(Protocol):
    """Anything with named LoRA modules: a LoraAdapter, or later a mixture or a generated
    adapter that exposes the same mapping."""

    @property
    def modules(self) -> Mapping[str, LoraFactors]: ...


@runtime_checkable
class Attachable(Protocol):
    """Something that installs its own hooks (a mixture of experts: generation.mixing)."""

    def attach(self, model: nn.Module) -> AbstractContextManager[nn.Module]: ...


def _target(model: nn.Module, name: str) -> nn.Linear:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise IncompatibleBaseModelError(
            f"adapter module {name!r} does not exist in the base model", module=name
        ) from None
    if not isinstance(module, nn.Linear):
        raise IncompatibleBaseModelError(
            f"adapter module {name!r} is a {type(module).__name__}, not a Linear layer",
            module=name,
        )
    return module


def _factors(layer: nn.Linear, name: str, factors: LoraFactors) -> tuple[torch.Tensor, ...]:
    # Copies: torch refuses to share read-only numpy buffers (frozen adapters are read-only).
    a, b = np.array(factors.A), np.array(factors.B)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
        raise IncompatibleBaseModelError(
            f"adapter module {name!r} has malformed factors A{a.shape} B{b.shape}", module=name
        )
    if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features:
        raise IncompatibleBaseModelError(
            f"adapter module {name!r} maps {a.shape[1]} -> {b.shape[0]} features but the base "
            f"model's layer maps {layer.in_features} -> {layer.out_features}",
            module=name,
            adapter_shape=[int(a.shape[1]), int(b.shape[0])],
            model_shape=[layer.in_features, layer.out_features],
        )
    weight = layer.weight
    # Factors in the layer's own dtype/device, like PEFT's adapter weights (fp16 zoo files
    # upcast to an fp32 model here).
    a_t = torch.as_tensor(a).to(device=weight.device, dtype=weight.dtype)  # (r, d_in)
    b_t = torch.as_tensor(b).to(device=weight.device, dtype=weight.dtype)  # (d_out, r)
    return a_t, b_t


def _make_hook(a: torch.Tensor, b: torch.Tensor, scaling: float) -> Any:
    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        x = inputs[0]  # (..., d_in)
        # Under autocast x may be bf16 while the factors are fp32, as in PEFT's LoRA layer.
        delta = (x.to(a.dtype) @ a.T) @ b.T  # (..., r) -> (..., d_out)
        return output + (delta * scaling).to(output.dtype)

    return hook


@contextmanager
def applied(model: nn.Module, adapter: AdapterLike | Attachable | None) -> Iterator[nn.Module]:
    """Within the block, ``model`` computes as base + adapter; ``None`` means the base model.

    Everything is checked before any hook is installed, so an incompatible adapter leaves the
    model untouched. An :class:`Attachable` (a mixture) installs its own hooks.
    """
    if adapter is None:
        yield model
        return
    if isinstance(adapter, Attachable):
        with adapter.attach(model):
            yield model
        return
    prepared = []
    for name, factors in adapter.modules.items():
        layer = _target(model, name)
        a, b = _factors(layer, name, factors)
        prepared.append((layer, _make_hook(a, b, float(factors.scaling))))
    handles = []
    try:
        for layer, hook in prepared:
            handles.append(layer.register_forward_hook(hook))
        yield model
    finally:
        for handle in handles:
            handle.remove()
