"""`loradex generator train` / `generate-adapter`, the `generation` job and `POST /generations`:
lineage, recipe, the artifact's versions, PEFT reload, and every refusal registering nothing."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from peft import PeftModel

from generation.apply import applied
from tests.api_helpers import api_client, assert_error, auth, make_container, poll_job
from tests.cli_helpers import cli
from tests.factories import TINY_BASE, TINY_CONFIG, tiny_llama, write_adapter_dir

EXPERTS = {
    "upper": "Convert every letter of the text to upper case",
    "lower": "Convert every letter of the text to lower case",
    "reverse": "Reverse the order of the letters in the word",
    "add": "Add the two numbers and give the sum",
    "multiply": "Multiply the two numbers and give the product",
}
FAST = ["--steps", "40"]


def seeded_home(tmp_path, monkeypatch, url):
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "hash")
    monkeypatch.setenv("LORADEX_DATABASE_URL", url)
    h = tmp_path / "home"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY_CONFIG))
    assert cli(h, "base", "add", TINY_BASE, "--config", cfg).code == 0
    for i, (name, text) in enumerate(EXPERTS.items()):
        src = write_adapter_dir(tmp_path / f"src-{name}", seed=i, r=(2, 4, 8)[i % 3])
        assert cli(h, "add", src, "--name", name, "--description", text).code == 0, name
    return h


@pytest.fixture
def home(tmp_path, monkeypatch, sqlite_url):
    """Most tests exercise SG-LoRA, not the catalog: SQLite only (CI time)."""
    return seeded_home(tmp_path, monkeypatch, sqlite_url)


@pytest.fixture
def any_home(tmp_path, monkeypatch, catalog_url):
    """The end-to-end tests also run on PostgreSQL when it is available."""
    return seeded_home(tmp_path, monkeypatch, catalog_url)


def state(home):
    listing = cli(home, "ls", "--all-versions", "--json").json()["data"]
    return sorted((i["name"], i["version"]) for i in listing)


def test_train_then_generate_registers_lineage_recipe_and_a_loadable_peft_adapter(
    any_home, tmp_path
):
    home = any_home
    run = cli(home, "generator", "train", *FAST, "--json")
    assert run.code == 0, run.stderr
    trained = run.json()
    assert len(trained["version"]) == 64 and trained["base_model"] == TINY_BASE
    assert trained["experts"] == sorted(f"{n}@1" for n in EXPERTS)
    assert trained["report"]["pairs"] == 5 and trained["text_embedder_id"].startswith("hash")
    assert cli(home, "generator", "show", "--json").json()["version"] == trained["version"]

    args = ["generate-adapter", "Turn the letters of the text into upper case", "--name", "gen"]
    run = cli(home, *args, "--k", "3", "--seed", "7", "--json")
    assert run.code == 0, run.stderr
    item = run.json()
    assert (item["source"], item["rank"], item["created"]) == ("generated", 16, True)
    assert "generated" in item["tags"]
    drew = item["drew_on"]
    assert len(drew) == 3 and drew[0]["name"] in ("upper", "lower")
    assert sum(d["weight"] for d in drew) == pytest.approx(1.0)
    assert [d["similarity"] for d in drew] == sorted((d["similarity"] for d in drew), reverse=True)

    detail = cli(home, "show", "gen", "--json").json()
    parents = [(p["name"], p["relation"], p["weight"]) for p in detail["lineage"]["parents"]]
    assert parents == [(d["name"], "generated", pytest.approx(d["weight"])) for d in drew]
    recipe = detail["lineage"]["recipe"]
    assert recipe["method"] == "sg-lora" and recipe["generator"]["version"] == trained["version"]
    assert recipe["params"] == {"k": 3, "tau": 0.05, "samples": 8, "seed": 7, "rank": 16}
    assert recipe["description"].startswith("Turn the letters")
    assert [i["name"] for i in recipe["inputs"]] == [d["name"] for d in drew]
    assert all(len(i["digest"]) == 64 for i in recipe["inputs"])

    # same request, same seed -> the same weights (idempotent); another seed -> a new version
    again = cli(home, *args, "--k", "3", "--seed", "7", "--json").json()
    assert (again["version"], again["created"], again["digest"]) == (1, False, item["digest"])
    other = cli(home, *args, "--k", "3", "--seed", "8", "--json").json()
    assert other["version"] == 2 and other["digest"] != item["digest"]

    out = tmp_path / "exported"
    assert cli(home, "export", "gen@1", out).code == 0
    base = tiny_llama()
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), out).eval()
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(0))
    from storage.peft_format import read_peft_dir

    with torch.no_grad(), applied(base, read_peft_dir(out).adapter):
        hooked = base(ids).logits
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, hooked, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(hooked, tiny_llama()(ids).logits)


def test_text_output_names_the_experts(home):
    assert cli(home, "generator", "train", *FAST).code == 0
    run = cli(home, "generate-adapter", "multiply two numbers", "--name", "g", "--k", "2")
    assert run.code == 0, run.stderr
    assert "generated g@1" in run.stdout and "multiply@1" in run.stdout


def test_bad_input_exits_2_with_one_line_and_registers_nothing(home, tmp_path):
    untrained = cli(home, "generate-adapter", "add numbers", "--name", "g")
    assert untrained.code == 2 and "loradex generator train" in untrained.stderr
    assert "generator_missing" in untrained.stderr
    assert cli(home, "generator", "show").code == 2
    assert cli(home, "generator", "train", *FAST).code == 0
    before = state(home)
    cases = [
        (["", "--name", "g"], "description_empty"),
        (["   ", "--name", "g"], "description_empty"),
        (["x" * 10_000, "--name", "g"], "description_too_long"),
        (["add", "--name", "g", "--k", "6"], "k_out_of_range"),
        (["add", "--name", "g", "--k", "0"], "k_out_of_range"),
        (["add", "--name", "g", "--base", "no-such-base"], "no_experts"),
        (["add", "--name", "../g"], "invalid_name"),
        (["add", "--name", "g", "--rank", "0"], "rank_out_of_range"),
        (["add", "--name", "g", "--samples", "-1"], "samples_out_of_range"),
        (["add", "--name", "g", "--tau", "0"], "tau_out_of_range"),
    ]
    for args, code in cases:
        run = cli(home, "generate-adapter", *args)
        assert run.code == 2, (args, run.stderr)
        assert f"[{code}]" in run.stderr and run.stderr.count("\n") == 1, (args, run.stderr)
    assert cli(home, "generator", "train", "--base", "nope").code == 2
    assert cli(home, "generator", "train", "--k", "0").code == 2
    assert "no such adapter" in cli(home, "generator", "train", "--exclude", "nope").stderr
    assert state(home) == before


def test_an_expert_removed_after_training_makes_the_generator_stale(home):
    assert cli(home, "generator", "train", *FAST).code == 0
    assert cli(home, "rm", "reverse").code == 0
    run = cli(home, "generate-adapter", "add numbers", "--name", "g")
    assert run.code == 1 and "[generator_stale]" in run.stderr
    assert "loradex generator train" in run.stderr
    assert cli(home, "generator", "train", *FAST).code == 0  # the four left are enough
    assert cli(home, "generate-adapter", "add numbers", "--name", "g").code == 0


def test_retraining_keeps_old_versions_and_excludes_what_it_is_told(home):
    first = cli(home, "generator", "train", *FAST, "--json").json()
    second = cli(home, "generator", "train", *FAST, "--exclude", "add", "--json").json()
    assert second["version"] != first["version"] and "add@1" not in second["experts"]
    assert second["excluded"] == ["add"]
    c = make_container(home, None)
    versions = c.generators.store.versions(TINY_BASE)
    assert sorted(versions) == sorted([first["version"], second["version"]])
    assert cli(home, "generate-adapter", "add two numbers", "--name", "g", "--k", "4").code == 0
    drew = cli(home, "show", "g", "--json").json()["lineage"]["parents"]
    assert "add" not in {p["name"] for p in drew}
    # a corrupted artifact is refused, not loaded
    path = next((home / "generators").rglob(f"{second['version']}.safetensors"))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    run = cli(home, "generate-adapter", "add two numbers", "--name", "g2")
    assert run.code == 1 and "blob_corrupted" in run.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not readable JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"version": 5}', "'version' is not a sha256"),
        (json.dumps({"version": "a" * 64}), "'base_model' is not a string"),
        (
            json.dumps(
                {"version": "a" * 64, "base_model": TINY_BASE, "experts": [], "settings": 3}
            ),
            "'settings' is not an object",
        ),
    ],
)
def test_a_corrupt_generator_pointer_is_a_storage_error_naming_the_file(home, content, fragment):
    c = make_container(home, None)
    pointer = c.generators.store.pointer_path(TINY_BASE)
    c.catalog.close()
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(content)
    before = state(home)
    for args in (["generator", "show", "--json"], ["generate-adapter", "add", "--name", "g"]):
        run = cli(home, *args)
        assert run.code == 1, run.stderr
        assert run.stderr.startswith("error [generator_corrupted]"), run.stderr
        assert str(pointer) in run.stderr and fragment in run.stderr
        assert "loradex generator train" in run.stderr
    assert state(home) == before


def test_generated_adapters_are_never_experts(home):
    assert cli(home, "generator", "train", *FAST).code == 0
    assert cli(home, "generate-adapter", "reverse the letters", "--name", "g").code == 0
    trained = cli(home, "generator", "train", *FAST, "--json").json()
    assert "g@1" not in trained["experts"] and len(trained["experts"]) == 5


# -- REST and the job kind ---------------------------------------------------------------------
def api_over(home, url):
    from tests.api_helpers import new_token

    container = make_container(home, url, text_embedder="hash")
    return container, new_token(container)


def test_post_generations_runs_a_job_that_publishes_the_adapter(any_home, catalog_url):
    home = any_home
    container, token = api_over(home, catalog_url)
    with api_client(container) as client:
        post_and_poll(client, token, home)


def post_and_poll(client, token, home):
    body = {"description": "add two numbers", "name": "g"}
    assert_error(
        client.post("/generations", headers=auth(token), json=body), 400, "generator_missing"
    )
    assert cli(home, "generator", "train", *FAST).code == 0
    r = client.post("/generations", headers=auth(token), json={**body, "k": 2, "seed": 3})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/jobs/{job_id}"
    job = poll_job(client, job_id)
    assert job["state"] == "succeeded", job
    assert job["result"] == "g@1" and job["spec"]["generator_version"]
    assert job["kind"] == "generation" and "add@1" in job["message"]
    detail = client.get("/adapters/g").json()
    assert detail["source"] == "generated"
    assert [p["relation"] for p in detail["lineage"]["parents"]] == ["generated"] * 2


BAD_REQUESTS = [
    ({"description": ""}, 422, "invalid_request"),
    ({"description": " \n "}, 422, "invalid_request"),
    ({"description": "x" * 10_000}, 422, "invalid_request"),
    ({"k": 99}, 400, "k_out_of_range"),
    ({"base": "no-such-base"}, 400, "no_experts"),
    ({"name": "../x"}, 422, "invalid_request"),
    ({"rank": 0}, 422, "invalid_request"),
    ({"generator_version": "0" * 64}, 422, "invalid_request"),
    ({"unknown": 1}, 422, "invalid_request"),
]


def test_generation_requests_are_validated_up_front(home, sqlite_url):
    assert cli(home, "generator", "train", *FAST).code == 0
    container, token = api_over(home, sqlite_url)
    with api_client(container) as client:
        for change, status, code in BAD_REQUESTS:
            body = {"description": "add two numbers", "name": "g", **change}
            r = client.post("/generations", headers=auth(token), json=body)
            assert_error(r, status, code)
        assert client.get("/jobs").json()["count"] == 0
        assert_error(client.post("/generations", json={"description": "a", "name": "g"}), 401)


def test_generated_weights_follow_the_requested_rank(home):
    assert cli(home, "generator", "train", *FAST).code == 0
    run = cli(home, "generate-adapter", "add numbers", "--name", "g4", "--rank", "4", "--json")
    assert run.code == 0, run.stderr
    modules = cli(home, "show", "g4", "--json").json()["modules"]
    assert {m["rank"] for m in modules} == {4}
    assert np.isfinite(run.json()["drew_on"][0]["weight"])
