"""The one scoped torch thread count (hub.runtime.threads): restore, nesting, no-ops, and the
per-thread property that lets concurrent merges, queries and SG-LoRA training use it unlocked."""

from __future__ import annotations

import threading

import pytest
import torch

from hub.runtime.threads import torch_threads

pytestmark = pytest.mark.skipif(
    torch.get_num_threads() < 2, reason="needs a torch intra-op pool of at least 2 threads"
)


def test_block_narrows_then_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_restores_after_an_exception():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_nested_blocks_each_restore_what_they_found():
    before = torch.get_num_threads()
    with torch_threads(1):
        with torch_threads(before):  # the merge path widens back for its big GEMMs
            assert torch.get_num_threads() == before
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("n, device", [(None, None), (1, "cuda"), (1, torch.device("cuda"))])
def test_none_or_a_gpu_device_leaves_the_count_alone(n, device):
    before = torch.get_num_threads()
    with torch_threads(n, device):
        assert torch.get_num_threads() == before


def test_a_block_in_one_thread_does_not_narrow_another():
    """A job worker inside a 1-thread block while a request thread runs: the request keeps
    its full pool. Fails on a torch build whose thread count is process-wide."""
    before = torch.get_num_threads()
    inside, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def worker() -> None:
        with torch_threads(1):
            seen.append(torch.get_num_threads())
            inside.set()
            release.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(10)
    try:
        assert torch.get_num_threads() == before
    finally:
        release.set()
        t.join(10)
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_interleaved_blocks_in_two_threads_leave_both_counts_intact():
    """A enters, B enters, A leaves, B leaves: with a process-wide count and no lock, B would
    restore A's narrowed value and leave every thread on 1 for good."""
    steps = [threading.Event() for _ in range(4)]
    after: dict[str, int] = {}

    def a() -> None:
        before = torch.get_num_threads()
        with torch_threads(1):
            steps[0].set()
            steps[1].wait(10)
        after["a"] = torch.get_num_threads() - before
        steps[2].set()

    def b() -> None:
        before = torch.get_num_threads()
        steps[0].wait(10)
        with torch_threads(1):
            steps[1].set()
            steps[2].wait(10)
        after["b"] = torch.get_num_threads() - before
        steps[3].set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert steps[3].is_set()
    assert after == {"a": 0, "b": 0}
