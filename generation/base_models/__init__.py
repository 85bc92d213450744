"""Base-model registry: name -> :class:`BaseModelSpec`, plus loading with a converted cache.

Each model lives in its own small module; add one by writing a module with a ``SPEC`` and
listing it in ``BASE_MODELS``.
"""

from __future__ import annotations

from pathlib import Path

from generation.base_models import gemma3, smollm2
from generation.base_models.loader import LoadedBase, PrepareInfo, load
from generation.base_models.loader import prepare as _prepare
from generation.base_models.spec import BaseModelSpec
from hub.core.errors import UnknownNameError

__all__ = [
    "BASE_MODELS",
    "BaseModelSpec",
    "LoadedBase",
    "PrepareInfo",
    "get_base_model",
    "load_base_model",
    "prepare",
]

BASE_MODELS: dict[str, BaseModelSpec] = {spec.name: spec for spec in (smollm2.SPEC, gemma3.SPEC)}


def get_base_model(name: str) -> BaseModelSpec:
    try:
        return BASE_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(BASE_MODELS))
        raise UnknownNameError(
            f"unknown base model {name!r}; known base models: {known}", name=name
        ) from None


def load_base_model(name: str, cache_dir: Path, device: str = "auto") -> LoadedBase:
    """Load ``name`` in eval mode, fp32, converting its GGUF into ``cache_dir`` on first use."""
    return load(get_base_model(name), Path(cache_dir), device)


def prepare(name: str, cache_dir: Path) -> PrepareInfo:
    """Convert ``name``'s GGUF into ``cache_dir`` if needed; returns fingerprint, path, sizes."""
    return _prepare(get_base_model(name), Path(cache_dir))
