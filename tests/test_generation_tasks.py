"""Task loading and validation: zoo names, JSON and JSONL files, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generation.tasks import ZOO_PROMPT, Task, load_task, task_from_dict
from hub.core.errors import BadInputError, UnknownNameError

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
needs_zoo = pytest.mark.skipif(not (ZOO / "tasks").is_dir(), reason="shared/zoo not present")

GOOD = {
    "name": "t",
    "family": "demo",
    "descriptions": ["Do it."],
    "prompt": "Q: {description} {input}\nA:",
    "train": [{"input": "a", "output": "A"}],
    "eval": [{"input": "b", "output": "B"}],
}


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


@needs_zoo
def test_zoo_task_by_name():
    task = load_task("capital_of", ZOO)
    assert task.family == "lookup" and len(task.descriptions) == 3
    assert len(task.train) == 2000 and len(task.eval) == 200
    assert task.render("France") == (
        "### Instruction:\nName the capital city of the country.\n### Input:\nFrance\n### Output:\n"
    )


@needs_zoo
def test_unknown_zoo_name_lists_known_tasks():
    with pytest.raises(UnknownNameError, match="known zoo tasks: add, animal_or_plant"):
        load_task("no_such_task", ZOO)


def test_name_without_zoo_dir():
    with pytest.raises(BadInputError, match="no zoo directory"):
        load_task("capital_of", None)


def test_json_file_and_defaults(tmp_path):
    data = {k: v for k, v in GOOD.items() if k not in ("family", "prompt", "eval")}
    task = load_task(write(tmp_path, "t.json", json.dumps(data)))
    assert task.family == "custom" and task.prompt == ZOO_PROMPT and task.eval == []
    with pytest.raises(BadInputError, match="no eval examples"):
        task.split("eval")


def test_jsonl_file(tmp_path):
    lines = [
        {"name": "t", "descriptions": ["Do it."]},
        {"split": "train", "input": "a", "output": "A"},
        {"split": "eval", "input": "b", "output": "B"},
        {"split": "train", "input": "c", "output": "C"},
    ]
    path = write(tmp_path, "t.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    task = load_task(path)
    assert [e.input for e in task.train] == ["a", "c"] and [e.input for e in task.eval] == ["b"]


def test_render_leaves_braces_in_values_alone():
    task = task_from_dict(GOOD)
    assert task.render("{input} {x}", "say {description}") == "Q: say {description} {input} {x}\nA:"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, "name: missing required field"),
        ({"descriptions": None}, "descriptions: missing required field"),
        ({"descriptions": []}, "descriptions: List should have at least 1 item"),
        ({"descriptions": [" "]}, "a description is empty"),
        ({"prompt": "no field here"}, "must contain {input}"),
        ({"prompt": "{input} {answer}"}, "unknown fields ['answer']"),
        ({"train": [], "eval": []}, "has no examples"),
        ({"train": [{"input": "a"}]}, "train.0.output: missing required field"),
        ({"train": [{"input": "a", "output": ""}]}, "output is empty"),
        ({"eval": [{"input": "a", "output": "x\ny"}]}, "could never match"),
        ({"eval": [{"input": "a", "output": " x"}]}, "could never match"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_task_fields(change, message):
    data = {**GOOD, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(BadInputError) as info:
        task_from_dict(data, "t.json")
    assert message in info.value.message
    assert info.value.message.startswith("invalid task t.json")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.json", "{not json", "is not valid JSON"),
        ("t.json", "[" * 100_000 + "]" * 100_000, "is not valid JSON: maximum recursion depth"),
        ("t.jsonl", "[" * 100_000, "line 1 (header) is not valid JSON"),
        ("t.json", "[1, 2]", "expected a JSON object"),
        ("t.jsonl", "", "is empty"),
        ("t.jsonl", '{"name": "t"', "line 1 (header) is not valid JSON"),
        ("t.jsonl", '{"split": "train", "input": "a", "output": "b"}', "first line must be"),
        ("t.jsonl", '{"name": "t", "descriptions": ["d"]}\n{"input": "a"}', "line 2: each"),
        ("t.jsonl", '{"name": "t", "descriptions": ["d"]}\n{"split": "x"}', '"split": "train"'),
        ("t.jsonl", '{"name": "t", "descriptions": ["d"]}', "has no examples"),
    ],
)
def test_bad_task_files(tmp_path, name, content, message):
    with pytest.raises(BadInputError, match=None) as info:
        load_task(write(tmp_path, name, content))
    assert message in info.value.message


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        load_task(tmp_path / "absent.jsonl")


def test_not_utf8(tmp_path):
    path = tmp_path / "t.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(BadInputError, match="not UTF-8"):
        load_task(path)


def test_task_is_immutable():
    task = Task.model_validate(GOOD)
    with pytest.raises(ValueError):
        task.name = "other"  # type: ignore[misc]
