"""Device strings -> torch devices. Callers pass plain strings; "auto" prefers CUDA."""

from __future__ import annotations

import torch

from hub.core.errors import BadInputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise BadInputError(f"unknown device {device!r}; use auto, cpu or cuda") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {device!r} requested but CUDA is not available")
    return resolved
