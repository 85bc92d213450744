"""`loradex models`, `eval` and `train` through the CLI: contract shapes, records, refusals."""

from __future__ import annotations

import json

import pytest

from tests.cli_helpers import ZOO, cli
from tests.factories import write_adapter_dir

needs_zoo = pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/zoo is not present")


@pytest.fixture
def home(tmp_path, model_cache, monkeypatch):
    monkeypatch.setenv("LORADEX_MODEL_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("LORADEX_ZOO_DIR", str(ZOO))
    return tmp_path / "home"


def test_models_ls_lists_both_base_models(home):
    doc = cli(home, "models", "ls", "--json").json()
    assert {m["name"] for m in doc["data"]} == {"smollm2-135m-instruct", "gemma3-270m"}


def test_models_prepare_unknown_name_lists_known(home):
    run = cli(home, "models", "prepare", "gpt-17")
    assert run.code == 2 and "smollm2-135m-instruct" in run.stderr


def test_eval_refuses_bad_tasks_and_foreign_bases(home, tmp_path):
    cli(home, "add", write_adapter_dir(tmp_path / "tiny", seed=1), "--name", "tiny")
    bad = tmp_path / "task.json"
    bad.write_text(
        json.dumps(
            {"name": "x", "descriptions": ["d"], "prompt": "no slot", "train": [], "eval": []}
        )
    )
    for task, fragment in [(str(bad), "input"), ("no_such_task", "no_such_task")]:
        run = cli(home, "eval", "tiny", "--task", task)
        assert run.code == 2 and fragment in run.stderr, run.stderr
    run = cli(home, "eval", "tiny", "--task", "capital_of", "--limit", "2")
    assert run.code == 2 and "base_model_not_registered" in run.stderr
    assert "tiny-llama" in run.stderr


@pytest.mark.slow
@needs_zoo
def test_eval_zoo_adapter_records_evaluation(home):
    assert cli(home, "import-zoo", ZOO).code == 0
    run = cli(home, "eval", "capital_of", "--task", "capital_of", "--limit", "12", "--json")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert {"adapter", "task", "accuracy", "n", "outputs"} <= doc.keys()
    assert (doc["adapter"], doc["task"], doc["n"]) == ("capital_of@1", "capital_of", 12)
    assert doc["accuracy"] >= 0.9
    assert {"input", "expected", "output", "correct"} <= doc["outputs"][0].keys()
    evals = cli(home, "show", "capital_of", "--json").json()["evaluations"]
    assert [(e["n"], e["details"]["source"]) for e in evals][-1] == (12, "loradex eval")


@pytest.mark.slow
@needs_zoo
def test_train_registers_a_trained_adapter_with_its_recipe(home):
    run = cli(
        home,
        "train",
        "--base",
        "smollm2-135m-instruct",
        "--task",
        "sentiment",
        "--rank",
        "2",
        "--steps",
        "2",
        "--batch",
        "2",
        "--warmup",
        "1",
        "--seed",
        "3",
        "--name",
        "sent-r2",
        "--json",
    )
    assert run.code == 0, run.stderr
    item = run.json()
    assert (item["name"], item["source"], item["rank"]) == ("sent-r2", "trained", 2)
    assert item["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    detail = cli(home, "show", "sent-r2", "--json").json()
    recipe = detail["lineage"]["recipe"]
    assert recipe["steps"] == 2 and recipe["seed"] == 3 and recipe["task"] == "sentiment"
    assert len(detail["modules"]) == 60
    assert (
        detail["base_model_fingerprint"]
        == json.loads((ZOO / "manifest.json").read_text())["base_model"]["gguf_sha256"]
    )


@needs_zoo
@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--rank", "99999999999999999999"], "rank_out_of_range", "rank must be 1..1024"),
        (["--rank", "1025"], "rank_out_of_range", "rank must be 1..1024"),
        (["--rank", "0"], "rank_out_of_range", "rank must be 1..1024, got 0"),
        (["--rank", "-3"], "rank_out_of_range", "rank must be 1..1024, got -3"),
        (["--seed", "99999999999999999999"], "seed_out_of_range", "seed must be 0..2147483647"),
        (["--seed", str(2**31)], "seed_out_of_range", "seed must be 0..2147483647"),
        (["--seed", "-1"], "seed_out_of_range", "seed must be 0..2147483647"),
        (["--lr", "nan"], "bad_lr", "not a finite number"),
        (["--lr", "inf"], "bad_lr", "not a finite number"),
        (["--lr", "0"], "bad_lr", "lr must be a finite number > 0"),
        (["--targets", "bogus"], "bad_targets", "unknown target module 'bogus'"),
        (["--targets", "q_proj,bogus"], "bad_targets", "valid target modules: down_proj"),
        (["--targets", ""], "bad_targets", "no target modules given"),
        (["--targets", " , "], "bad_targets", "no target modules given"),
    ],
)
def test_train_refuses_bad_arguments_before_loading_a_model(
    home, monkeypatch, args, code, fragment
):
    from hub.services.models import ModelService

    def no_load(*_a, **_k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(ModelService, "load", no_load)
    base_args = ["--base", "smollm2-135m-instruct", "--task", "capital_of", "--steps", "1"]
    rank = [] if "--rank" in args else ["--rank", "4"]  # an option given twice is a usage error
    run = cli(home, "train", *base_args, *rank, *args)
    assert run.code == 2, run.stderr
    assert run.stderr.startswith(f"error [{code}]") and fragment in run.stderr, run.stderr
    assert cli(home, "ls", "--json").json()["count"] == 0


def test_train_targets_accept_module_suffixes():
    from hub.core.architectures import target_problem

    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"]
    assert target_problem(["q_proj", "self_attn.q_proj", "up_proj"], names) is None
    assert "'proj'" in (target_problem(["proj"], names) or "")


@needs_zoo
def test_train_checks_its_card_before_loading_a_model(home, monkeypatch, tmp_path):
    """The card comes from the task file's first description: one over the card limit failed
    only after the model was loaded and trained."""
    from hub.services.models import ModelService

    def no_load(*_a, **_k):
        raise AssertionError("a model was loaded before the card was checked")

    monkeypatch.setattr(ModelService, "load", no_load)
    task = json.loads((ZOO / "tasks" / "sentiment.json").read_text())
    task["descriptions"] = ["x" * 12_600, *task["descriptions"][1:]]
    path = tmp_path / "long.json"
    path.write_text(json.dumps(task))
    run = cli(home, "train", "--base", "smollm2-135m-instruct", "--task", str(path), "--rank", "1")
    assert run.code == 2 and "[invalid_description]" in run.stderr, run.stderr


def test_card_tags_are_counted_once_each_and_added_tags_count():
    from hub.core.errors import BadInputError
    from hub.core.models import AdapterMeta

    tags = [f"t{i}" for i in range(64)]
    assert len(AdapterMeta(name="x", tags=[*tags, *tags[:10]]).tags) == 64  # repeats once
    with pytest.raises(BadInputError) as err:
        AdapterMeta(name="x", tags=[*tags, "generated"])
    assert err.value.code == "invalid_tags" and "counting those the command adds" in str(err.value)
