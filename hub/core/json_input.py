"""Reading JSON that someone handed us: what the reader raises, and repeated keys.

Python's ``json.loads`` keeps the last of two equal keys in one object without a word, so which
value was meant is unknown; every reader of untrusted JSON here refuses them through
``unique_keys``, each with its own error.
"""

from __future__ import annotations

from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel, model_validator

# What json.loads raises for bad input: JSONDecodeError and the integer-digits limit are
# ValueErrors, and nesting deeper than the interpreter's recursion limit is a RecursionError (a
# 200 kB "[[[...]]]" is enough). Code that parses JSON someone handed it catches all of them.
JSON_ERRORS = (ValueError, RecursionError)


def unique_keys(
    on_repeat: Callable[[str], NoReturn],
) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """An ``object_pairs_hook`` for ``json.loads`` that calls ``on_repeat(key)`` (which raises)
    for a key given twice in one object."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                on_repeat(key)
            out[key] = value
        return out

    return hook


def _kind_problem(annotation: Any, value: Any) -> str | None:
    """What ``value`` should have been, when ``annotation`` wants a JSON number or boolean (or a
    list of them) and ``value`` is of another kind; None otherwise (pydantic checks the rest)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kind_problem(get_args(annotation)[0], value)
    if origin in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return _kind_problem(options[0], value) if len(options) == 1 else None
    if origin is list and isinstance(value, list) and get_args(annotation):
        item = get_args(annotation)[0]
        return next((p for p in (_kind_problem(item, v) for v in value) if p), None)
    if annotation is bool and not isinstance(value, bool):
        return f"true or false, got {value!r}"
    if annotation in (int, float) and isinstance(value, bool | str | bytes):
        return f"a JSON number, got {value!r}"
    return None


class JsonBody(BaseModel):
    """A request body or job spec: a JSON value of the wrong kind for a number or boolean field
    (or an item of a list of them) is refused (422), not coerced as pydantic's lax mode would
    (`true` as 1, `"300"` as 300, `"yes"` as true); a number field still takes `7.0` for an
    integer, as JSON Schema does."""

    @model_validator(mode="before")
    @classmethod
    def _json_kinds_match(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in data and data[key] is not None:
                problem = _kind_problem(field.annotation, data[key])
                if problem:
                    raise ValueError(f"{key} must be {problem}")
        return data
