"""Whether a GPU could be visible, without importing torch (1 s of a CLI command's start).

``torch.cuda.is_available()`` needs a driver; on Linux a driver leaves device nodes behind
(NVIDIA: ``/proc/driver/nvidia``, ``/dev/nvidiactl``; WSL2: ``/dev/dxg``; ROCm builds, which
torch also reports through ``torch.cuda``: ``/dev/kfd``). With none of them there is no GPU to
find, so "auto" can mean the CPU without the import. Anywhere else (or with a driver), torch
decides.
"""

from __future__ import annotations

import sys
from pathlib import Path

DRIVER_NODES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def gpu_possible() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    return any(Path(node).exists() for node in DRIVER_NODES)


def auto_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``; torch is imported only when one may exist."""
    if not gpu_possible():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
