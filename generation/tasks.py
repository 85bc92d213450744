"""Text tasks: a prompt template, paraphrased descriptions and input -> output examples.

Sources, all validated into one :class:`Task`:

- a zoo task name (``capital_of``), read from ``<zoo_dir>/tasks/<name>.json``;
- a JSON file with the zoo's shape::

      {"name": "...", "family": "...", "descriptions": ["..."], "prompt": "...{input}...",
       "train": [{"input": "...", "output": "..."}], "eval": [...]}

- a JSONL file: the first line is the header object (``name``, ``descriptions``, optional
  ``family`` and ``prompt``), every other line one example
  ``{"split": "train" | "eval", "input": "...", "output": "..."}``.

``prompt`` defaults to the zoo template; ``family`` to ``custom``. At least one example is
required; each split may be empty (training needs train, evaluation needs eval). Outputs must be
non-empty single lines without surrounding spaces: generation cuts at the first newline and
strips, so any other output could never match.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hub.core.errors import BadInputError, UnknownNameError
from hub.core.json_input import JSON_ERRORS

ZOO_PROMPT = "### Instruction:\n{description}\n### Input:\n{input}\n### Output:\n"
MAX_TASK_BYTES = 64 << 20
_FIELD = re.compile(r"\{(input|description)\}")
_ANY_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str
    output: str

    @field_validator("output")
    @classmethod
    def _single_line(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("output is empty")
        if value != value.strip() or "\n" in value:
            raise ValueError(
                f"output {value!r} has surrounding spaces or a newline; generated answers are "
                "cut at the first newline and stripped, so it could never match"
            )
        return value


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    family: str = "custom"
    descriptions: list[str] = Field(min_length=1)
    prompt: str = ZOO_PROMPT
    train: list[Example] = Field(default_factory=list)
    eval: list[Example] = Field(default_factory=list)

    @field_validator("descriptions")
    @classmethod
    def _non_blank(cls, value: list[str]) -> list[str]:
        if any(not d.strip() for d in value):
            raise ValueError("a description is empty")
        return value

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{input}" not in value:
            raise ValueError("the prompt template must contain {input}")
        unknown = sorted(set(_ANY_FIELD.findall(value)) - {"input", "description"})
        if unknown:
            raise ValueError(
                f"the prompt template has unknown fields {unknown}; only {{input}} and "
                "{description} are filled in"
            )
        return value

    @model_validator(mode="after")
    def _has_examples(self) -> Task:
        if not self.train and not self.eval:
            raise ValueError("the task has no examples (train and eval are both empty)")
        return self

    def render(self, input_text: str, description: str | None = None) -> str:
        """The prompt for one input. One regex pass, so braces inside the input or the
        description are never treated as template fields."""
        values = {"input": input_text, "description": description or self.descriptions[0]}
        return _FIELD.sub(lambda m: values[m.group(1)], self.prompt)

    def split(self, which: Literal["train", "eval"]) -> list[Example]:
        examples = self.train if which == "train" else self.eval
        if not examples:
            raise BadInputError(f"task {self.name!r} has no {which} examples")
        return examples


def _validation_message(source: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "task"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "missing required field"
        problems.append(f"{where}: {msg}")
    return f"invalid task {source}: " + "; ".join(problems)


def task_from_dict(data: Any, source: str = "<dict>") -> Task:
    if not isinstance(data, dict):
        raise BadInputError(f"invalid task {source}: expected a JSON object, got {type(data)}")
    try:
        return Task.model_validate(data)
    except ValidationError as exc:
        raise BadInputError(_validation_message(source, exc), source=source) from None


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_TASK_BYTES:
        raise BadInputError(f"task file {path} is {size} bytes, over {MAX_TASK_BYTES}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"task file {path} is not UTF-8 text: {exc}") from None


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except JSON_ERRORS as exc:
        raise BadInputError(f"{where} is not valid JSON: {str(exc)[:200]}") from None


def _from_jsonl(text: str, path: Path) -> Task:
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise BadInputError(f"task file {path} is empty")
    header = _parse_json(lines[0][1], f"{path} line {lines[0][0]} (header)")
    if not isinstance(header, dict) or {"train", "eval", "split"} & set(header):
        raise BadInputError(
            f"{path} line {lines[0][0]}: the first line must be the header object "
            '(name, descriptions, optional family and prompt), e.g. {"name": "t", '
            '"descriptions": ["Do X."]}; examples go on the following lines'
        )
    splits: dict[str, list[Any]] = {"train": [], "eval": []}
    for number, line in lines[1:]:
        row = _parse_json(line, f"{path} line {number}")
        split = row.pop("split", None) if isinstance(row, dict) else None
        if split not in splits:
            raise BadInputError(
                f'{path} line {number}: each example line needs "split": "train" or "eval" '
                f'plus "input" and "output", got {line[:120]!r}'
            )
        splits[split].append(row)
    return task_from_dict({**header, **splits}, str(path))


def load_task_file(path: Path) -> Task:
    text = _read_text(path)
    if path.suffix.lower() == ".jsonl":
        return _from_jsonl(text, path)
    return task_from_dict(_parse_json(text, f"task file {path}"), str(path))


def zoo_task_names(zoo_dir: Path) -> list[str]:
    return sorted(p.stem for p in (zoo_dir / "tasks").glob("*.json"))


def load_task(name_or_path: str | Path, zoo_dir: Path | None = None) -> Task:
    """A task from a JSON/JSONL file path, or a zoo task name looked up in ``zoo_dir``."""
    path = Path(name_or_path)
    if path.is_file():
        return load_task_file(path)
    if path.suffix.lower() in (".json", ".jsonl") or len(path.parts) > 1:
        raise BadInputError(f"task file {path} does not exist")
    name = str(name_or_path)
    if zoo_dir is not None and (zoo_dir / "tasks" / f"{name}.json").is_file():
        return load_task_file(zoo_dir / "tasks" / f"{name}.json")
    if zoo_dir is None:
        raise BadInputError(f"{name!r} is not a task file, and no zoo directory was given")
    known = zoo_task_names(zoo_dir)
    shown = ", ".join(known[:8]) + (f" ... ({len(known)} in all)" if len(known) > 8 else "")
    raise UnknownNameError(
        f"unknown task {name!r}: not a file and not a zoo task; known zoo tasks: {shown or 'none'}",
        name=name,
    )
