"""``loradex mix``, ``show``, ``eval``, ``export``, ``jobs`` and ``rm`` on a mixture through the
CLI (tiny base model); and one slow end-to-end run on SmolLM2 with two zoo experts."""

from __future__ import annotations

import json

import pytest

from storage.peft_format import write_peft_dir
from tests.cli_helpers import ZOO, cli
from tests.mixture_helpers import expert, use_tiny_base, write_task

needs_zoo = pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/zoo is not present")


@pytest.fixture
def home(tmp_path, monkeypatch):
    use_tiny_base(monkeypatch)
    home = tmp_path / "home"
    for name in ("first", "last"):
        adapter, config = expert(name)
        write_peft_dir(adapter, config, tmp_path / name)
        assert cli(home, "add", tmp_path / name, "--name", name).code == 0
    return home


def test_mix_show_eval_export_and_rm(home, tmp_path):
    tasks = [write_task(tmp_path, t) for t in ("first", "last")]
    run = cli(home, "mix", "first", "last", "--name", "mx", "--task", tasks[0], "--task",
              tasks[1], "--steps", "20", "--examples", "4", "--tag", "moe", "--json")  # fmt: skip
    assert run.code == 0, run.stderr
    item = run.json()
    assert (item["name"], item["version"], item["source"], item["mergeable"]) == (
        "mx", 1, "mixture", False,
    )  # fmt: skip
    assert [(p["name"], p["relation"]) for p in item["lineage"]["parents"]] == [
        ("first", "mixture"), ("last", "mixture"),
    ]  # fmt: skip
    jobs = cli(home, "jobs", "ls", "--json").json()["data"]
    assert [(j["kind"], j["state"], j["id"]) for j in jobs] == [
        ("mixture", "succeeded", item["job"])
    ]

    shown = cli(home, "show", "mx")
    assert "experts      first@1, last@1" in shown.stdout
    assert "gate         66 parameters, prompt routing, depth 1, 4 modules" in shown.stdout
    doc = cli(home, "show", "mx", "--json").json()
    assert doc["metadata"]["mixture"]["gate_parameters"] == 66
    assert doc["config"]["peft_type"] == "XLORA"

    ev = cli(home, "eval", "mx", "--task", tasks[0], "--limit", "2", "--json")
    assert ev.code == 0, ev.stderr
    assert (ev.json()["adapter"], ev.json()["n"]) == ("mx@1", 2)

    out = cli(home, "export", "mx", tmp_path / "mx-export", "--json")
    assert out.code == 0 and (tmp_path / "mx-export" / "loradex_mixture.json").is_file()

    busy = cli(home, "rm", "first")
    assert busy.code == 1 and "expert_in_use" in busy.stderr and "mx@1" in busy.stderr
    merge = cli(home, "merge", "mx", "last", "--name", "nope", "--method", "cat")
    assert merge.code == 2 and "mixture_not_lora" in merge.stderr
    assert cli(home, "rm", "mx").code == 0 and cli(home, "rm", "first").code == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["first"], "mixture_too_few_experts"),
        (["first", "last"], "mixture_task_missing"),
        (["first", "ghost"], "not_found"),
        (["first", "last", "--task", "/nope/a.json", "--task", "/nope/b.json"], "does not exist"),
        (["first", "last", "--task", "x", "--routing", "sideways"], "routing"),
    ],
)
def test_mix_bad_input_exits_2_and_registers_nothing(home, args, fragment):
    run = cli(home, "mix", *args, "--name", "bad")
    assert run.code == 2 and fragment in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1  # one line, no traceback
    assert cli(home, "ls", "--json").json()["count"] == 2
    assert cli(home, "jobs", "ls", "--json").json()["count"] == 0


@pytest.mark.slow
@needs_zoo
def test_smollm2_mixture_of_two_zoo_experts_routes_and_solves_both(tmp_path, monkeypatch):
    """The real path: SmolLM2, two zoo experts from different families, a prompt-routed gate
    fitted on 6 examples each (the route objective); each task is solved as by its expert."""
    from tests.cli_helpers import cli as run_cli

    monkeypatch.setenv("LORADEX_ZOO_DIR", str(ZOO))
    home = tmp_path / "home"
    assert run_cli(home, "import-zoo", ZOO).code == 0
    run = run_cli(home, "mix", "capital_of", "french_color", "--name", "cf", "--examples", "6",
                  "--steps", "150", "--lr", "0.01", "--json")  # fmt: skip
    assert run.code == 0, run.stderr
    assert run.json()["metadata"]["mixture"]["tasks"] == ["capital_of", "french_color"]
    for task in ("capital_of", "french_color"):
        ev = run_cli(home, "eval", "cf", "--task", task, "--limit", "4", "--json")
        assert ev.code == 0, ev.stderr
        assert ev.json()["accuracy"] >= 0.75, ev.json()["outputs"]
    recipe = json.loads(json.dumps(run_cli(home, "show", "cf", "--json").json()["lineage"]))
    assert recipe["recipe"]["training"]["objective"] == "route"
