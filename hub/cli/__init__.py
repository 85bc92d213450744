"""The ``loradex`` command: one Typer app, commands grouped by use case in sibling modules."""

import sys

import typer

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
    """Run the command. A usage error (an unknown option, a value of the wrong type, a missing
    argument) is one ``error [usage]`` line on stderr and exit 2, like any other bad input
    (CLI.md), instead of click's multi-line box."""
    try:
        code = app(standalone_mode=False)
    except _cli_errors() as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())  # a bare `loradex` / `loradex jobs`: the help, as before
        else:
            where = f"{ctx.command_path}: " if ctx is not None else ""
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            message = exc.format_message()  # type: ignore[attr-defined]  # click exceptions
            typer.echo(f"error [usage]: {where}{message}{hint}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("error [aborted]: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _cli_errors() -> tuple[type[Exception], ...]:
    """Parse errors: recent typer vendors click (its exceptions derive from TyperException);
    older typer raises click's own."""
    types: list[type[Exception]] = [typer.TyperException]
    try:
        import click

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


__all__ = ["app", "main"]
