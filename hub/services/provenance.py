"""The software part of every derived adapter's recipe: which versions produced it."""

from __future__ import annotations

import platform
from importlib import metadata

import hub

# Packages whose versions change what a merge, mixture, generation or transfer computes.
RECORDED = ("torch", "numpy", "transformers", "peft")


def software_versions() -> dict[str, str]:
    """``{"loradex", "python", and each RECORDED package that is installed}`` (no imports: the
    installed distributions' metadata is enough, and cheap)."""
    versions = {"loradex": hub.__version__, "python": platform.python_version()}
    for name in RECORDED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
