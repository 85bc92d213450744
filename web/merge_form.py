"""The merge form's fields, derived from the method catalogue (the data ``GET /methods`` serves):
each parameter's type string becomes an input the browser can validate, and ``loradex.js``
turns the inputs back into the JSON ``params`` of ``POST /merges``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hub.core.models import AdapterItem


@dataclass(frozen=True)
class ParamField:
    name: str
    kind: str  # "int" | "float" | "choice" | "text"
    required: bool
    default: str  # "" when the method decides (None) or the value is required
    choices: tuple[str, ...]
    description: str
    type_text: str


def param_field(row: dict[str, str]) -> ParamField:
    """``{"name", "type", "default", "description"}`` of ``describe_methods`` -> a field."""
    type_text, default = row["type"], row["default"]
    literals = tuple(re.findall(r"'([^']*)'", type_text))
    if literals:
        kind, choices = "choice", literals
    elif type_text.split(" | ")[0] == "bool":
        kind, choices = "choice", ("true", "false")
    elif type_text.split(" | ")[0] in ("int", "float"):
        kind, choices = type_text.split(" | ")[0], ()
    else:
        kind, choices = "text", ()
    if default in ("required", "None"):
        shown = ""
    elif default in ("True", "False"):
        shown = default.lower()
    else:
        shown = default.strip("'")
    return ParamField(
        name=row["name"],
        kind=kind,
        required=default == "required",
        default=shown,
        choices=choices,
        description=row.get("description", ""),
        type_text=type_text,
    )


def method_forms(methods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": m["name"],
            "pretty_name": m["pretty_name"],
            "reference": m["reference"],
            "description": m["description"],
            "fields": [param_field(p) for p in m["params"]],
        }
        for m in methods
    ]


def adapter_choices(items: list[AdapterItem], chosen: list[str]) -> list[dict[str, Any]]:
    """Options for the adapter picker: every mergeable adapter (latest version) plus any chosen
    ``NAME@VERSION`` that is not the latest, each marked selected when it was asked for."""
    wanted = set(chosen)
    options = []
    for item in items:
        ref = f"{item.name}@{item.version}"
        options.append(
            {
                "value": ref,
                "label": f"{item.name} (v{item.version}, rank {item.rank}, "
                f"{item.base_model or 'no base model'})",
                "selected": ref in wanted or item.name in wanted,
                "disabled": not item.mergeable,
            }
        )
    known = {o["value"] for o in options} | {i.name for i in items}
    options += [
        {"value": ref, "label": ref, "selected": True, "disabled": False}
        for ref in chosen
        if ref not in known
    ]
    return options
