"""Scoped torch intra-op thread counts that are safe when merges run in several threads."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def cpu_threads(n: int, device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU torch ops on ``n`` intra-op threads (restored afterwards).

    The Gram path runs on one thread except for its big GEMMs: the R x R LAPACK calls and the
    elementwise ops on (m, d, k) tensors are many tiny parallel regions, and on a shared,
    loaded 2-core box a descheduled OpenMP worker stalls every barrier (measured: eigh of
    8 x 160 x 160 fp64 1.0 s on 2 threads vs 0.018 s on 1; an ``abs`` of 8 x 4096 x 16
    17 ms vs < 1 ms). GEMMs of 8 x 160 x d x 160 are coarse enough to gain from all threads.

    torch's thread count is process-wide, so blocks are serialized by a re-entrant lock:
    concurrent merges (job workers, a server) never interleave their set/restore pairs, which
    could otherwise leave the process on 1 thread for good. Other torch work running at the
    same time may see the narrowed count while a block is open (a speed effect only).
    """
    if device.type != "cpu":
        yield
        return
    with _THREADS_LOCK:
        old = torch.get_num_threads()
        if n == old:
            yield
            return
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)


_THREADS_LOCK = threading.RLock()
