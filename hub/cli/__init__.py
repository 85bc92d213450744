"""The ``loradex`` command: one Typer app, commands grouped by use case in sibling modules."""

from hub.cli import catalog_commands, merge_commands, serve_commands  # noqa: F401 - register commands
from hub.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
