"""`loradex import-zoo` registers every zoo adapter with its description, family and accuracy."""

from __future__ import annotations

import json

import pytest

from tests.cli_helpers import ZOO, cli

pytestmark = pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/zoo is not present")


def test_import_zoo_registers_everything_once(tmp_path, catalog_url, monkeypatch):
    monkeypatch.setenv("LORADEX_DATABASE_URL", catalog_url)
    home = tmp_path / "home"
    manifest = json.loads((ZOO / "manifest.json").read_text())
    run = cli(home, "import-zoo", ZOO, "--json")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert doc["count"] == doc["created"] == len(manifest["adapters"]) == 49

    listing = cli(home, "ls", "--json").json()
    assert listing["count"] == 49
    by_name = {i["name"]: i for i in listing["data"]}
    for rec in manifest["adapters"]:
        item = by_name[rec["task"]]
        assert item["description"] == rec["descriptions"][0]
        assert set(item["tags"]) == {rec["family"], "zoo"}
        assert item["rank"] == rec["rank"] and item["source"] == "zoo"
        assert item["base_model"] == manifest["base_model"]["id"]
        assert item["base_model_fingerprint"] == manifest["base_model"]["gguf_sha256"]
        assert item["metadata"]["adapter_acc"] == rec["adapter_acc"]

    detail = cli(home, "show", "capital_of", "--json").json()
    assert detail["evaluations"][0]["accuracy"] == 1.0
    assert len(detail["modules"]) == 60  # q_proj and v_proj of 30 layers
    assert cli(home, "ls", "--tag", "lookup", "--json").json()["count"] == 9

    again = cli(home, "import-zoo", ZOO, "--json").json()
    assert again["created"] == 0
    assert len(cli(home, "show", "capital_of", "--json").json()["evaluations"]) == 1
    assert cli(home, "ls", "--all-versions", "--json").json()["count"] == 49


def test_import_zoo_refuses_a_non_zoo(tmp_path):
    run = cli(tmp_path / "h", "import-zoo", tmp_path)
    assert run.code == 2 and "manifest.json" in run.stderr


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ([], "expected a JSON object"),
        ({"base_model": {"id": "x/y"}}, "missing key 'adapters'"),
        ({"adapters": []}, "missing key 'base_model'"),
        ({"base_model": {}, "adapters": []}, "missing key 'base_model.id'"),
        ({"base_model": 5, "adapters": []}, "'base_model' must be an object"),
        ({"base_model": {"id": "x/y"}, "adapters": {}}, "'adapters' must be a list"),
        ({"base_model": {"id": "x/y"}, "adapters": [5]}, "adapters[0] must be an object"),
        (
            {
                "base_model": {"id": "x/y"},
                "adapters": [{"task": "t", "family": "f", "adapter": "a", "adapter_acc": 0.5}],
            },
            "missing key 'descriptions' in adapters[0]",
        ),
        (
            {
                "base_model": {"id": "x/y"},
                "adapters": [
                    {
                        "task": "t",
                        "family": "f",
                        "adapter": "a",
                        "adapter_acc": 0.5,
                        "descriptions": "d",
                    }
                ],
            },
            "'adapters[0].descriptions' must be a non-empty list of strings",
        ),
    ],
)
def test_import_zoo_refuses_a_malformed_manifest(tmp_path, manifest, expected):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "manifest.json").write_text(json.dumps(manifest))
    home = tmp_path / "h"
    run = cli(home, "import-zoo", zoo)
    assert run.code == 2, run.stderr
    assert "zoo_manifest_invalid" in run.stderr and expected in run.stderr
    assert cli(home, "base", "ls", "--json").json()["count"] == 0


def test_import_zoo_refuses_a_manifest_nested_past_the_json_readers_limit(tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    run = cli(tmp_path / "h", "import-zoo", zoo)
    assert run.code == 2 and "zoo_manifest_invalid" in run.stderr and "recursion" in run.stderr
