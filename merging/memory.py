"""Peak-memory measurement around a merge: CUDA allocator stats, or the process RSS peak on CPU.

On Linux the RSS high-water mark is reset by writing ``5`` to ``/proc/self/clear_refs`` so the
figure covers the merge only; elsewhere it falls back to ``ru_maxrss`` growth (a lower bound).
"""

from __future__ import annotations

import resource
from pathlib import Path
from types import TracebackType

import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """``with PeakMemory(device) as pm: ...``; then ``pm.peak_bytes`` (extra over the start)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._base = 0
        self._hwm_reset = False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            _CLEAR.write_text("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        rss = _status_kib("VmRSS")
        self._base = (rss or 0) * 1024
        self._maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        hwm = _status_kib("VmHWM") if self._hwm_reset else None
        if hwm is not None:
            self.peak_bytes = max(0, hwm * 1024 - self._base)
        else:
            now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_bytes = max(0, now - self._maxrss0)
