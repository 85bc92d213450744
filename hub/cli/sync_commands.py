"""Hugging Face Hub sync commands: ``sync pull`` and ``sync push``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from hub.cli.app import EXIT_CODES, JsonOpt, app, container, emit_json, err, handles_errors, out
from hub.cli.one_value_options import LoradexTyper
from hub.core.names import AdapterRef

if TYPE_CHECKING:
    from hub.services.sync import PullReport

sync_app = LoradexTyper(help="Sync adapters with the Hugging Face Hub.", no_args_is_help=True)
app.add_typer(sync_app, name="sync")


@sync_app.command("pull")
@handles_errors
def pull(
    repo: Annotated[
        list[str] | None,
        typer.Option(
            "--repo", help="Repository OWNER/NAME, optionally OWNER/NAME@REVISION (repeatable)."
        ),
    ] = None,
    base: Annotated[str | None, typer.Option("--base", help="Adapters of this base model.")] = None,
    author: Annotated[str | None, typer.Option(help="Only this user or organization.")] = None,
    search: Annotated[str | None, typer.Option(help="Substring of the repository id.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Hub tag (repeatable; all must match).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Pull at most this many repositories.")] = 20,
    name: Annotated[
        str | None, typer.Option(help="Adapter name, for one --repo (default OWNER--NAME).")
    ] = None,
    update_card: Annotated[
        bool,
        typer.Option(
            "--update-card",
            help="Where the weights are already here, still make the adapter's card "
            "(description, tags, license) the Hub card's; fields the Hub card leaves empty "
            "are kept.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only say what the pull would do, with the weights' sizes: every check made "
            "before the weights arrive (files, config, shapes against a registered base from the "
            "weights' header, the card), no weights downloaded, nothing registered.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Pull PEFT adapters from the Hugging Face Hub, pinned to a commit; skips ones already here."""
    from rich.progress import Progress

    from hub.services.sync import PullTargets

    targets = PullTargets.checked(
        repos=repo or [],
        base_model=base,
        author=author,
        search=search,
        tags=tag or [],
        limit=limit,
        name=name,
        update_card=update_card,
        dry_run=dry_run,
    )
    c = container()
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("checking" if dry_run else "pulling", total=None)
        report = c.sync.pull(
            targets,
            progress=lambda done, total, message: bar.update(
                task, completed=done, total=total, description=message
            ),
        )
    if as_json:
        items = [i.model_dump(mode="json") for i in report.created]
        emit_json(
            {
                "data": items,
                "count": len(items),
                "dry_run": report.dry_run,
                "outcomes": [o.to_dict() for o in report.outcomes],
            }
        )
    else:
        for o in report.outcomes:
            what = f"{o.item.name}@{o.item.version}" if o.item else (o.planned or "")
            why = o.reason or (f"{o.error.code}: {o.error.message}" if o.error else "")
            at = f"@{o.revision[:12]}" if o.revision else ""
            out.print(f"{o.status:8} {o.repo}{at} {what} {why}".rstrip(), highlight=False)
        out.print(report.summary(), highlight=False)
    _exit_on_failures(report)


def _exit_on_failures(report: PullReport) -> None:
    """One stderr line for the failures; exit 2 when all of them are bad input or not found
    (a wrong id, token or file), else 1."""
    failed = report.failed
    if not failed:
        return
    first = failed[0]
    assert first.error is not None
    more = f" (+{len(failed) - 1} more failed)" if len(failed) > 1 else ""
    err.print(
        f"error [{first.error.code}]: {first.repo}: {first.error.message}{more}",
        markup=False,
        highlight=False,
    )
    codes = {EXIT_CODES.get(o.error.kind, 1) if o.error else 1 for o in failed}
    raise typer.Exit(2 if codes == {2} else 1)


@sync_app.command("push")
@handles_errors
def push(
    adapter: Annotated[str, typer.Argument(metavar="NAME[@VERSION]")],
    repo: Annotated[str, typer.Argument(metavar="OWNER/NAME", help="Target Hub repository.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push an adapter version to a Hub repository: PEFT files and a model card, one commit."""
    report = container().sync.push(AdapterRef.parse(adapter), repo, private=private)
    if as_json:
        emit_json(report.to_dict())
    else:
        out.print(
            f"pushed {report.item.name}@{report.item.version} to "
            f"hf://{report.repo}@{report.revision} ({report.url})",
            highlight=False,
        )
