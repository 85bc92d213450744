"""Merge commands: methods, merge, revert."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from hub.cli.app import (
    JsonOpt,
    app,
    container,
    emit_json,
    err,
    handles_errors,
    out,
    registered_ref,
    warn,
)
from hub.core.errors import BadInputError
from hub.core.json_input import JSON_ERRORS
from hub.core.names import AdapterRef

if TYPE_CHECKING:
    from hub.services.merge import MergePlan


def _parse_weights(text: str | None, n: int) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError as exc:
        raise BadInputError(f"--weights must be comma-separated numbers, got {text!r}") from exc


def _parse_params(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs; values are JSON when they parse as JSON (numbers, true, null)."""
    import json

    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInputError(f"--param expects key=value, got {pair!r}")
        if key in params:  # which one was meant? the last silently winning hides a slip
            raise BadInputError(f"--param {key} is given twice; give it once")
        try:
            params[key] = json.loads(value)
        except JSON_ERRORS:
            params[key] = value
    return params


@app.command()
@handles_errors
def methods(as_json: JsonOpt = False) -> None:
    """List merge methods with their parameters."""
    from merging import list_methods, param_rows

    docs: list[dict[str, Any]] = [
        {
            "name": m.name,
            "pretty_name": m.pretty_name,
            "reference": m.reference,
            "params": param_rows(m),
        }
        for m in list_methods()
    ]
    if as_json:
        emit_json({"data": docs, "count": len(docs)})
        return
    for d in docs:
        params = ", ".join(f"{p['name']}={p['default']}" for p in d["params"])
        out.print(f"[bold]{d['name']}[/] — {d['pretty_name']}  ({params})", highlight=False)
        out.print(f"    {d['reference']}", highlight=False, markup=False)


@app.command()
@handles_errors
def merge(
    adapters: Annotated[list[str], typer.Argument(metavar="NAME[@VERSION]...")],
    name: Annotated[str, typer.Option(help="Name of the merged adapter.")],
    method: Annotated[str, typer.Option(help="Merge method (see `loradex methods`).")] = "svd",
    weights: Annotated[str | None, typer.Option(help="Comma-separated weights.")] = None,
    rank: Annotated[int | None, typer.Option(help="Output rank (svd*, lego).")] = None,
    density: Annotated[float | None, typer.Option(help="Density (ties, dare, prune).")] = None,
    basis: Annotated[int | None, typer.Option(help="RMM basis size P.")] = None,
    modules: Annotated[str | None, typer.Option(help="strict | intersection | union")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Method param key=value.")] = None,
    description: Annotated[str, typer.Option(help="Description of the result.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed (DARE's random masks), 0..2^31-1.")] = 0,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only check: run every check of the merge from the catalog (no weights read) "
            "and say what it would produce (modules, ranks, size); compute and write nothing.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Merge adapters into a new one, with lineage and the full recipe."""
    from rich.progress import Progress

    params = _parse_params(param or [])
    for key, value in (
        ("rank", rank),
        ("density", density),
        ("basis", basis),
        ("modules", modules),
    ):
        if value is None:
            continue
        if key in params and params[key] != value:
            raise BadInputError(
                f"--{key} {value} and --param {key}={params[key]} disagree; give one",
                code="param_conflict",
            )
        params[key] = value
    refs = [AdapterRef.parse(a) for a in adapters]
    request: dict[str, Any] = {
        "method": method,
        "name": name,
        "weights": _parse_weights(weights, len(refs)),
        "params": params,
        "description": description,
        "tags": tag or [],
        "device": device,
        "seed": seed,
    }
    if dry_run:
        _print_plan(container().merges.plan(refs, **request), as_json)
        return
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("merging", total=None)
        outcome = container().merges.merge(
            refs,
            **request,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    item = outcome.added.item
    warn(outcome.added.warnings)
    if as_json:
        emit_json(
            {
                **item.model_dump(mode="json"),
                "created": outcome.added.created,
                "report": outcome.report,
            }
        )
    else:
        secs = outcome.report.get("seconds", 0.0)
        ref = registered_ref(item, outcome.added.created)
        out.print(f"merged into {ref} (rank {item.rank}, {secs:.2f} s)")


def _print_plan(plan: MergePlan, as_json: bool) -> None:
    if as_json:
        emit_json(plan.to_dict())
        return
    lay = plan.layout
    ranks = sorted(set(lay.module_ranks.values()))
    rank = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]} by module"
    what = "a new adapter" if plan.new_adapter else "a new version of"
    lines = [
        f"would merge {', '.join(plan.labels)} by {lay.method} "
        f"on {plan.device} into {what} {plan.name}; nothing computed or written",
        f"  base model: {plan.base_model or '(none recorded)'}",
        f"  modules: {len(lay.module_ranks)} merged, output rank {rank}",
        f"  parameters: {lay.output_parameters:,} ({_mb(4 * lay.output_parameters)} in fp32), "
        f"inputs {lay.input_parameters:,}",
    ]
    if lay.modules_skipped:
        lines.append(f"  skipped by the module policy: {len(lay.modules_skipped)} modules")
    if lay.modules_partial:
        lines.append(f"  merged from only some inputs: {len(lay.modules_partial)} modules")
    if lay.artifact_parameters is not None:
        share = lay.artifact_parameters / max(lay.input_parameters, 1)
        lines.append(
            f"  revert artifact: {lay.artifact_parameters:,} parameters "
            f"({share:.0%} of the inputs')"
        )
    if lay.dense:
        lines.append("  dense: a d_out x d_in matrix per input and module (PEFT's path)")
    out.print("\n".join(lines), markup=False, highlight=False)


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes / 1e3:.1f} kB"


@app.command()
@handles_errors
def revert(
    merged: Annotated[str, typer.Argument(metavar="MERGED[@VERSION]")],
    member: Annotated[str, typer.Option(help="The input to rebuild: NAME or NAME@VERSION.")],
    name: Annotated[str | None, typer.Option(help="Name of the reverted adapter.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild one input of a reversible (RMM) merge as a new adapter."""
    added = container().merges.revert(AdapterRef.parse(merged), member, name=name)
    warn(added.warnings)
    if as_json:
        emit_json({**added.item.model_dump(mode="json"), "created": added.created})
    else:
        out.print(f"reverted {member} as {registered_ref(added.item, added.created)}")
