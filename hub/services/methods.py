"""The merge-method catalogue as plain data, for delivery layers that must not import merging."""

from __future__ import annotations

from typing import Any


def describe_methods() -> list[dict[str, Any]]:
    """Every merge method: name, pretty name, paper reference, description and parameters."""
    import merging  # torch: loaded on first use, not at server start

    return [
        {
            "name": m.name,
            "pretty_name": m.pretty_name,
            "reference": m.reference,
            "description": m.description,
            "params": merging.param_rows(m),
        }
        for m in merging.list_methods()
    ]
