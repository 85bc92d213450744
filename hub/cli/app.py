"""The ``loradex`` Typer app and what every command shares: options, JSON output, error mapping.

Parse -> call a service -> render (text for people, ``--json``).

This module is the one place that maps the HubError tree to exit codes (CLI.md):
0 ok, 1 failure, 2 bad input. Errors print one line on stderr, never a traceback (unless --debug).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from hub.cli.one_value_options import LoradexTyper
from hub.config import load_settings, misspelt_settings
from hub.core.errors import HubError
from hub.core.models import AdapterItem
from hub.services.container import Container
from hub.services.job_specs import validation_problems

app = LoradexTyper(
    name="loradex",
    help="loradex: a registry, retrieval and merging hub for LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
base_app = LoradexTyper(help="Base models that adapters are checked against.", no_args_is_help=True)
app.add_typer(base_app, name="base")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
EXIT_CODES = {"bad_input": 2, "not_found": 2, "conflict": 1, "failure": 1}


class _State:
    data_dir: Path | None = None
    debug: bool = False
    settings_checked = False  # misspelt LORADEX_* variables are reported once per process


STATE = _State()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
F = TypeVar("F", bound=Callable[..., Any])


def container() -> Container:
    if not STATE.settings_checked:
        STATE.settings_checked = True
        for note in misspelt_settings():
            err.print(f"warning: {note}", markup=False, highlight=False)
    return Container(load_settings(STATE.data_dir))


def emit_json(doc: Any) -> None:
    if isinstance(doc, BaseModel):
        doc = doc.model_dump(mode="json")
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")


def warn(warnings: list[str]) -> None:
    """Each warning of a result on stderr (stdout stays the result, `--json` included)."""
    for w in warnings:
        err.print(f"warning: {w}", markup=False, highlight=False)


def registered_ref(item: AdapterItem, created: bool) -> str:
    """NAME@VERSION of a command's result, saying when it was already in the catalog: merges,
    reverts and seeded training are deterministic and adding is idempotent, so the same request
    again returns the existing version, and the human line must not imply a new one."""
    ref = f"{item.name}@{item.version}"
    return ref if created else f"{ref}, already registered with these weights"


def emit_list(items: list[AdapterItem], total: int | None = None) -> None:
    data = [i.model_dump(mode="json") for i in items]
    emit_json(
        {"data": data, "count": len(data), "total": total if total is not None else len(data)}
    )


def handles_errors(fn: F) -> F:
    """Map every error to one stderr line and the contract's exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HubError as exc:
            _fail(f"error [{exc.code}]: {exc.message}", EXIT_CODES.get(exc.kind, 1))
        except ValidationError as exc:
            problems = validation_problems(exc)
            _fail(f"error [bad_input]: {problems}", 2)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the contract forbids tracebacks by default
            _fail(f"error [internal]: {type(exc).__name__}: {exc}", 1)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int) -> None:
    if STATE.debug:
        raise
    # one line whatever the cause's text holds (torch's shape errors span several)
    err.print(re.sub(r"\s*\n\s*", " ", message.strip()), markup=False, highlight=False)
    raise typer.Exit(code)


@app.callback()
def main_options(
    data_dir: Annotated[
        str | None,
        typer.Option("--data-dir", help="Data directory (else $LORADEX_HOME, else per-user)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    if data_dir is not None and not data_dir.strip():
        # Path("") is the current directory: a catalog would appear wherever the shell is
        raise typer.BadParameter(
            "is empty (use . for the current directory)", param_hint="--data-dir"
        )
    STATE.data_dir, STATE.debug = (Path(data_dir) if data_dir is not None else None), debug
