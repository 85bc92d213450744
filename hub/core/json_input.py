"""Reading JSON that someone handed us: what the reader raises, and repeated keys.

Python's ``json.loads`` keeps the last of two equal keys in one object without a word, so which
value was meant is unknown; every reader of untrusted JSON here refuses them through
``unique_keys``, each with its own error.
"""

from __future__ import annotations

from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, model_validator

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


def a_number_not_bool_or_text(value: Any) -> Any:
    """Before pydantic's lax number parsing: ``true`` is not 1 and ``"7"`` is not 7 in a JSON
    body (a client that sends them has a bug to hear about), while ``7.0`` stays an integer, as
    JSON Schema counts it."""
    if isinstance(value, bool | str | bytes):
        raise ValueError(f"expected a JSON number, got {type(value).__name__} {value!r}")
    return value


# JSON numbers as REST bodies and job specs take them (pydantic's lax mode otherwise coerces).
JsonInt = Annotated[int, BeforeValidator(a_number_not_bool_or_text)]
JsonFloat = Annotated[float, BeforeValidator(a_number_not_bool_or_text)]


def _json_kinds(annotation: Any) -> set[str]:
    """The JSON kinds a field annotation takes: "number", "boolean", "other"."""
    if annotation is bool:
        return {"boolean"}
    if annotation in (int, float):
        return {"number"}
    if get_origin(annotation) in (Union, UnionType):
        return set().union(*(_json_kinds(a) for a in get_args(annotation) if a is not type(None)))
    return {"other"}


class JsonBody(BaseModel):
    """A request body or job spec: a JSON value of the wrong kind for a number or boolean field
    is refused (422), not coerced as pydantic's lax mode would (`true` as 1, `"300"` as 300,
    `"yes"` as true); a number field still takes `7.0` for an integer, as JSON Schema does."""

    @model_validator(mode="before")
    @classmethod
    def _json_kinds_match(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key not in data or data[key] is None:
                continue
            kinds, value = _json_kinds(field.annotation), data[key]
            if kinds == {"number"} and isinstance(value, bool | str | bytes):
                raise ValueError(f"{key} must be a JSON number, got {value!r}")
            if kinds == {"boolean"} and not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
        return data
