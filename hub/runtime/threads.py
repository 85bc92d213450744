"""One scoped torch intra-op thread count for every subsystem (merging, embedders, SG-LoRA).

Small CPU kernels are slower on two threads than on one when the box is busy: a descheduled
OpenMP worker stalls every barrier (measured: eigh of 8 x 160 x 160 fp64 1.0 s on 2 threads vs
0.018 s on 1; one MiniLM query 1.5 s vs 51 ms at load 17; the SG-LoRA CVAE 30x). Each of those
places narrows the count for its block and restores it afterwards.

The scope needs no lock: with torch's OpenMP backend (every Linux wheel) the count is a
per-OS-thread setting (``omp_set_num_threads`` sets the calling thread's ICV), so a job
worker's block never narrows a request thread, and two threads' set/restore pairs cannot
interleave into a wrong final count. ``tests/test_runtime_threads.py`` checks that property
on the installed build, so a backend with a process-wide count would fail it rather than
silently serialise or corrupt concurrent work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def torch_threads(n: int | None, device: Any = None) -> Iterator[None]:
    """Run the enclosed CPU torch ops of this thread on ``n`` intra-op threads, restored after.

    ``n`` None, ``n`` equal to the current count, or a non-CPU ``device`` (a ``torch.device``
    or a string) leave the count alone. Nesting is fine: each block restores what it found.
    """
    device_type = getattr(device, "type", device)
    if n is None or (device_type is not None and device_type != "cpu"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
