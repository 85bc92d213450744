"""Catalog commands: init, add, edit, ls, show, export, rm, gc, verify, import-zoo, base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hub.cli.app import (
    JsonOpt,
    app,
    base_app,
    container,
    emit_json,
    emit_list,
    err,
    handles_errors,
    out,
    warn,
)
from hub.core.errors import BadInputError
from hub.core.models import AdapterItem, AdapterMeta
from hub.core.names import AdapterRef

if TYPE_CHECKING:
    from hub.services.registry import AddPlan


def _print_items(items: list[AdapterItem]) -> None:
    from rich.table import Table

    table = Table("name", "ver", "base model", "rank", "source", "tags", "description")
    for i in items:
        table.add_row(
            i.name,
            str(i.version),
            i.base_model or "-",
            str(i.rank),
            i.source,
            ",".join(i.tags),
            (i.description[:60] + "…") if len(i.description) > 60 else i.description,
        )
    out.print(table)


# -- commands ---------------------------------------------------------------------------------
@app.command()
@handles_errors
def init(as_json: JsonOpt = False) -> None:
    """Create an empty catalog in the data directory (idempotent)."""
    c = container()
    c.catalog  # noqa: B018 - opening migrates the database
    c.blobs  # noqa: B018
    doc = {"home": str(c.settings.home), "database": _redact(c.settings.resolved_database_url)}
    emit_json(doc) if as_json else out.print(f"catalog ready in {c.settings.home}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
@handles_errors
def add(
    path: Annotated[Path, typer.Argument(help="PEFT adapter directory.")],
    name: Annotated[
        str | None, typer.Option(help="Adapter name (default: directory name).")
    ] = None,
    description: Annotated[str, typer.Option(help="What the adapter does.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    license: Annotated[str | None, typer.Option(help="License id, e.g. apache-2.0.")] = None,
    base: Annotated[str | None, typer.Option(help="Base model id (overrides the config).")] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only check: validate the files, the shapes against the base model and the "
            "card, and say whether these weights would be a new version; write nothing.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a PEFT LoRA directory (idempotent: same weights -> same version)."""
    meta = AdapterMeta(
        name=name if name is not None else Path(path).resolve().name,
        description=description,
        tags=tag or [],
        license=license,
    )
    if dry_run:
        _add_dry_run(container().registry.plan_add_path(path, meta, base_model=base), as_json)
        return
    result = container().registry.add_path(path, meta, base_model=base)
    warn(result.warnings)
    if as_json:
        emit_json({**result.item.model_dump(mode="json"), "created": result.created})
    else:
        verb = "registered" if result.created else "already registered as"
        out.print(f"{verb} {result.item.name}@{result.item.version} ({result.item.digest[:12]})")


def _add_dry_run(plan: AddPlan, as_json: bool) -> None:
    warn(plan.warnings)
    if as_json:
        emit_json(plan.to_dict())
    elif plan.existing is not None:
        out.print(f"would change nothing: already registered as {plan.existing.name}@"
                  f"{plan.existing.version} ({plan.version.digest[:12]})")  # fmt: skip
    else:
        what = "a new adapter" if plan.new_adapter else "a new version of"
        out.print(f"would register {what} {plan.name} ({plan.version.digest[:12]}, "
                  f"{plan.version.size_bytes} bytes); nothing written")  # fmt: skip


@app.command()
@handles_errors
def edit(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    description: Annotated[str | None, typer.Option(help='New description ("" clears it).')] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Tag (repeatable): replaces the tag set.")
    ] = None,
    clear_tags: Annotated[bool, typer.Option("--clear-tags", help="Remove every tag.")] = False,
    license: Annotated[str | None, typer.Option(help='License id ("" clears it).')] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change an adapter's card: description, tags, license (shared by all its versions).
    Search re-embeds the card; the weights and versions do not change."""
    if tag and clear_tags:
        raise BadInputError("--tag and --clear-tags contradict each other; give one")
    item, changed = container().registry.edit_card(
        name,
        description=description,
        tags=[] if clear_tags else tag,
        license=license,
    )
    if as_json:
        emit_json({**item.model_dump(mode="json"), "changed": changed})
    else:
        verb = "edited the card of" if changed else "no change to the card of"
        out.print(f"{verb} {item.name} (latest version {item.version})")


@app.command("ls")
@handles_errors
def ls_cmd(
    base: Annotated[str | None, typer.Option(help="Only adapters for this base model.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only adapters with this tag.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Only this source (upload, zoo, merge…).")
    ] = None,
    all_versions: Annotated[bool, typer.Option("--all-versions", help="Every version.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
    offset: Annotated[int, typer.Option(min=0, max=10**9)] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List adapters (latest version of each unless --all-versions)."""
    items, total = container().registry.ls(
        base_model=base,
        tag=tag,
        source=source,
        all_versions=all_versions,
        limit=limit,
        offset=offset,
    )
    emit_list(items, total) if as_json else _print_items(items)


@app.command()
@handles_errors
def show(
    ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]")], as_json: JsonOpt = False
) -> None:
    """Show one adapter version: metadata, modules, lineage, evaluations."""
    detail = container().registry.show(AdapterRef.parse(ref))
    if as_json:
        doc = detail.model_dump(mode="json")
        doc.pop("config", None)
        doc["config"] = detail.config
        emit_json(doc)
        return
    out.print(f"[bold]{detail.name}@{detail.version}[/]  {detail.description}")
    for label, value in [
        ("base model", detail.base_model),
        ("fingerprint", detail.base_model_fingerprint),
        ("source", detail.source),
        ("tags", ", ".join(detail.tags)),
        ("license", detail.license),
        ("digest", detail.digest),
        ("size", f"{detail.size_bytes:,} bytes"),
        ("targets", ", ".join(detail.target_modules)),
        ("modules", len(detail.modules)),
        ("rank", detail.rank),
        ("mergeable", "yes" if detail.mergeable else f"no — {detail.not_mergeable_reason}"),
    ]:
        out.print(f"  {label:<12} {value}", highlight=False)
    mixture = detail.metadata.get("mixture") if detail.source == "mixture" else None
    if mixture:
        out.print(f"  experts      {', '.join(mixture['experts'])}", highlight=False)
        out.print(
            f"  gate         {mixture['gate_parameters']:,} parameters, {mixture['routing']} "
            f"routing, depth {mixture['depth']}, {mixture['modules']} modules",
            highlight=False,
        )
    recipe = detail.lineage.recipe or {}
    if recipe.get("method"):
        out.print(f"  recipe       {recipe['method']} {recipe.get('params', {})}", highlight=False)
    for p in detail.lineage.parents:
        gone = ", deleted" if p.deleted else ""
        out.print(f"  parent       {p.name}@{p.version} ({p.relation}, weight {p.weight}{gone})")
    for e in detail.evaluations:
        out.print(
            f"  eval         {e.task}: {e.accuracy:.3f} on {e.n} ({e.details.get('source', '')})"
        )


@app.command()
@handles_errors
def export(
    ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]")],
    out_dir: Annotated[Path, typer.Argument(metavar="DIR", help="New directory to write.")],
    as_json: JsonOpt = False,
) -> None:
    """Write a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)."""
    path = container().registry.export(AdapterRef.parse(ref), out_dir)
    emit_json({"path": str(path)}) if as_json else out.print(f"exported to {path}")


@app.command()
@handles_errors
def rm(
    ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]")],
    as_json: JsonOpt = False,
) -> None:
    """Remove an adapter (all versions) or one version; unreferenced blobs are deleted."""
    digests = container().registry.rm(AdapterRef.parse(ref))
    emit_json({"removed": ref, "digests": digests}) if as_json else out.print(f"removed {ref}")


@app.command()
@handles_errors
def gc(
    grace: Annotated[
        float | None, typer.Option(help="Keep unreferenced blobs younger than this (seconds).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete blobs no version references, and stale temporary files."""
    c = container()
    report = c.registry.gc(c.settings.gc_grace_seconds if grace is None else grace)
    doc = {
        "removed_blobs": report.removed_blobs,
        "removed_temp_files": report.removed_temp_files,
        "kept_young_blobs": report.kept_young_blobs,
    }
    emit_json(doc) if as_json else out.print(
        f"removed {len(report.removed_blobs)} blobs, {report.removed_temp_files} temp files"
    )


@app.command()
@handles_errors
def verify(as_json: JsonOpt = False) -> None:
    """Re-hash every referenced blob; exit 1 if any is missing or corrupted."""
    bad = container().registry.verify()
    emit_json({"ok": not bad, "bad_digests": bad}) if as_json else out.print(
        "all blobs verified" if not bad else f"{len(bad)} bad blobs: {', '.join(bad)}"
    )
    if bad:
        raise typer.Exit(1)


@app.command("import-zoo")
@handles_errors
def import_zoo_cmd(
    zoo_dir: Annotated[Path, typer.Argument(metavar="DIR", help="The zoo (../shared/zoo).")],
    as_json: JsonOpt = False,
) -> None:
    """Register every zoo adapter with its task description, family tag and accuracy."""
    from rich.progress import Progress

    from hub.services.zoo import import_zoo, read_manifest

    c = container()
    total = len(read_manifest(zoo_dir)["adapters"])
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("importing zoo", total=total)
        results = import_zoo(c.registry, zoo_dir, progress=lambda _: bar.advance(task))
    created = sum(1 for _, new in results if new)
    if as_json:
        emit_json(
            {
                "data": [i.model_dump(mode="json") for i, _ in results],
                "count": len(results),
                "created": created,
            }
        )
    else:
        out.print(f"imported {len(results)} zoo adapters ({created} new)")


@base_app.command("add")
@handles_errors
def base_add(
    model_id: Annotated[str, typer.Argument(help="Base model id, e.g. org/model.")],
    config: Annotated[Path, typer.Option(help="The model's config.json.")],
    revision: Annotated[str | None, typer.Option(help="Revision (commit sha).")] = None,
    fingerprint: Annotated[str | None, typer.Option(help="Weight fingerprint (sha256).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a base model so `add` checks adapters' module names and shapes against it."""
    from hub.core.json_input import JSON_ERRORS

    try:
        cfg = json.loads(Path(config).read_text())
    except (OSError, *JSON_ERRORS) as exc:
        raise BadInputError(f"cannot read config {config}: {str(exc)[:200]}") from None
    info = container().registry.register_base_model(
        model_id, cfg, revision=revision, fingerprint=fingerprint
    )
    doc = {
        **info.model_dump(mode="json", exclude={"module_shapes"}),
        "modules": len(info.module_shapes),
    }
    emit_json(doc) if as_json else out.print(f"registered base model {model_id}")


@base_app.command("ls")
@handles_errors
def base_ls(as_json: JsonOpt = False) -> None:
    """List registered base models."""
    infos = container().catalog.list_base_models()
    docs = [
        {**i.model_dump(mode="json", exclude={"module_shapes"}), "modules": len(i.module_shapes)}
        for i in infos
    ]
    if as_json:
        emit_json({"data": docs, "count": len(docs)})
    else:
        for d in docs:
            out.print(
                f"{d['model_id']}  {d['architecture']}  {d['modules']} modules  "
                f"fingerprint={d['fingerprint']}",
                highlight=False,
            )
