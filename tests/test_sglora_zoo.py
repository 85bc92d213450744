"""Slow: SG-LoRA on the real zoo and SmolLM2 through the CLI (MiniLM embeddings, 576/192-wide
q_proj/v_proj of 30 layers, ranks 4/8/16): the generated adapter fits the base model, loads and
evaluates with the zoo protocol."""

from __future__ import annotations

import pytest

from tests.cli_helpers import ZOO, cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/zoo is not present"),
]


@pytest.fixture
def home(tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("LORADEX_MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("LORADEX_ZOO_DIR", str(ZOO))
    return tmp_path / "home"


def test_generate_for_a_held_out_zoo_task_and_evaluate_it(home):
    assert cli(home, "import-zoo", ZOO).code == 0
    run = cli(home, "generator", "train", "--exclude", "capital_of", "--steps", "30", "--json")
    assert run.code == 0, run.stderr
    trained = run.json()
    assert len(trained["experts"]) == 48 and "capital_of@1" not in trained["experts"]
    assert trained["report"]["pairs"] == 48 * 3  # each expert's three paraphrases
    assert trained["text_embedder_id"].startswith("minilm/")

    description = "What is the capital city of this country?"  # capital_of's descriptions[1]
    run = cli(home, "generate-adapter", description, "--name", "gen-capital", "--json")
    assert run.code == 0, run.stderr
    item = run.json()
    assert len(item["drew_on"]) == 4 and "capital_of" not in {d["name"] for d in item["drew_on"]}
    assert item["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    detail = cli(home, "show", "gen-capital", "--json").json()
    shapes = {(m["in_features"], m["out_features"], m["rank"]) for m in detail["modules"]}
    assert shapes == {(576, 576, 16), (576, 192, 16)} and len(detail["modules"]) == 60

    run = cli(home, "eval", "gen-capital", "--task", "capital_of", "--limit", "4", "--json")
    assert run.code == 0, run.stderr
    assert run.json()["n"] == 4
