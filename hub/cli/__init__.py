"""The ``loradex`` command: one Typer app, commands grouped by use case in sibling modules."""

from hub.cli import catalog_commands  # noqa: F401 - registers the commands on the app
from hub.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
