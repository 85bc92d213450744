"""The ``loradex`` command: one Typer app, commands grouped by use case in sibling modules."""

from hub.cli import (  # noqa: F401 - importing registers the commands
    catalog_commands,
    generation_commands,
    merge_commands,
    mixture_commands,
    model_commands,
    search_commands,
    serve_commands,
    sync_commands,
    transfer_commands,
)
from hub.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
