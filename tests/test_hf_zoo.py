"""Real adapters through the Hub: a zoo LoRA (SmolLM2-135M-Instruct) published on the fake Hub is
pulled with the CLI, checked against the registered real base model, scores like the original
on its task, and pushes back byte-identical."""

from __future__ import annotations

import json

import pytest

from tests.cli_helpers import ZOO, cli
from tests.hf_fixtures import ALICE

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.slow
@pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/zoo is not present")
def test_zoo_adapter_pulled_from_the_hub_is_checked_and_scores(
    fake_hub, tmp_path, model_cache, monkeypatch
):
    monkeypatch.setenv("LORADEX_MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("LORADEX_ZOO_DIR", str(ZOO))
    env = {"LORADEX_HF_ENDPOINT": fake_hub.url, "LORADEX_HF_TOKEN": ALICE}
    src = ZOO / "adapters" / "capital_of"
    card = f"---\nbase_model: {SMOLLM2}\nlicense: apache-2.0\ntags: [lookup]\n---\n\nCapitals.\n"
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    sha = fake_hub.add_repo("alice/capital-of", {**files, "README.md": card.encode()})
    home = tmp_path / "home"

    assert cli(home, "models", "prepare", "smollm2-135m-instruct").code == 0  # registers the base
    pulled = cli(home, "sync", "pull", "--base", SMOLLM2, "--json", env=env)
    assert pulled.code == 0, pulled.stderr
    [item] = pulled.json()["data"]
    assert (item["name"], item["source"], item["base_model"]) == (
        "alice--capital-of",
        f"hf://alice/capital-of@{sha}",
        SMOLLM2,
    )
    assert item["base_model_fingerprint"]  # filled from the registered (real) base model
    record = next(
        r
        for r in json.loads((ZOO / "manifest.json").read_text())["adapters"]
        if r["task"] == "capital_of"
    )
    assert item["rank"] == record["rank"]
    assert item["tags"] == ["lookup"] and item["license"] == "apache-2.0"

    scored = cli(
        home, "eval", "alice--capital-of", "--task", "capital_of", "--limit", "8", "--json"
    )
    assert scored.code == 0, scored.stderr
    assert scored.json()["accuracy"] >= 0.9  # the zoo records 1.00 for capital_of

    pushed = cli(
        home, "sync", "push", "alice--capital-of", "alice/capital-of-copy", "--json", env=env
    )
    assert pushed.code == 0, pushed.stderr
    copy = fake_hub.files_at("alice/capital-of-copy", pushed.json()["revision"])
    assert copy["adapter_model.safetensors"] == files["adapter_model.safetensors"]
