"""Generated parts of README.md (settings and command tables). ``tests/test_docs.py`` fails when
README drifts from the code; ``python -m hub.docs`` prints the fresh tables."""

from __future__ import annotations

import re

import typer.main

from hub.cli import app
from hub.config import Settings

MARKERS = {
    "settings": ("<!-- settings:start -->", "<!-- settings:end -->"),
    "commands": ("<!-- commands:start -->", "<!-- commands:end -->"),
    "methods": ("<!-- methods:start -->", "<!-- methods:end -->"),
    "merge-codes": ("<!-- merge-codes:start -->", "<!-- merge-codes:end -->"),
}


def settings_table() -> str:
    rows = ["| setting | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = "per-user data dir" if name == "home" else repr(field.default)
        rows.append(
            f"| `{name}` | `LORADEX_{name.upper()}` | {default} | {field.description or ''} |"
        )
    return "\n".join(rows)


def _walk(group, prefix: str):
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _walk(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", (cmd.help or "").strip().splitlines()[0]


def commands_table() -> str:
    root = typer.main.get_command(app)
    rows = ["| command | what it does |", "| --- | --- |"]
    rows += [f"| `loradex {n}` | {h} |" for n, h in _walk(root, "")]
    return "\n".join(rows)


def methods_table() -> str:
    from merging import methods_table as table

    return table()


def merge_codes_table() -> str:
    from hub.services.merge import SERVICE_CODES
    from merging import MERGE_CODES

    rows = ["| code | meaning |", "| --- | --- |"]
    rows += [
        f"| `{code}` | {meaning} |" for code, meaning in {**MERGE_CODES, **SERVICE_CODES}.items()
    ]
    return "\n".join(rows)


GENERATORS = {
    "settings": settings_table,
    "commands": commands_table,
    "methods": methods_table,
    "merge-codes": merge_codes_table,
}


def render(readme: str) -> str:
    """README text with every generated section replaced by the current tables."""
    for key, (start, end) in MARKERS.items():
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        block = f"{start}\n{GENERATORS[key]()}\n{end}"
        readme = pattern.sub(lambda _m: block, readme)  # noqa: B023 - used immediately
    return readme


if __name__ == "__main__":
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    path.write_text(render(path.read_text()))
    print(f"updated {path}")
