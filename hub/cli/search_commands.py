"""Retrieval commands: search, similar, reindex, encoder train."""

from __future__ import annotations

from typing import Annotated

import typer

from hub.cli.app import JsonOpt, app, container, emit_json, err, handles_errors, out
from hub.cli.one_value_options import LoradexTyper
from hub.core.names import AdapterRef

encoder_app = LoradexTyper(
    help="The weight encoder that embeds adapters by their weights.", no_args_is_help=True
)
app.add_typer(encoder_app, name="encoder")


def _emit(results, as_json: bool) -> None:
    docs = [r.to_dict() for r in results]
    if as_json:
        emit_json({"data": docs, "count": len(docs)})
        return
    for d in docs:
        out.print(
            f"{d['score']:.3f}  {d['name']}@{d['version']}  ({d['why']})  {d['description'][:70]}",
            highlight=False,
            markup=False,
        )


def _explain_empty(service) -> None:
    if service.registry.catalog.versions_fingerprint()[0] == 0:
        err.print("the catalog is empty: add adapters with `loradex add` or `loradex import-zoo`")
    else:
        err.print("no adapter matches the filters")


@app.command()
@handles_errors
def search(
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="What the adapter should do, in plain words.")
    ],
    k: Annotated[int, typer.Option("--k", help="How many results (1-1000).")] = 10,
    mode: Annotated[str, typer.Option(help="text | weights | hybrid")] = "hybrid",
    base: Annotated[str | None, typer.Option(help="Only adapters for this base model.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only adapters with this tag.")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find adapters for a task by their cards, their weights, or both."""
    service = container().search
    results = service.search(query, k=k, mode=mode, base_model=base, tag=tag, source=source)
    _emit(results, as_json)
    if not results and not as_json:
        _explain_empty(service)
    service.saver.flush()  # index changes reach disk before the process ends


@app.command()
@handles_errors
def similar(
    ref: Annotated[str, typer.Argument(metavar="NAME[@VERSION]")],
    k: Annotated[int, typer.Option("--k", help="How many results (1-1000).")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Nearest adapters in weight space."""
    service = container().search
    results = service.similar(AdapterRef.parse(ref), k=k)
    _emit(results, as_json)
    if not results and not as_json:
        err.print(f"no other adapter has weight features to compare with {ref}")
    service.saver.flush()


@app.command()
@handles_errors
def reindex(as_json: JsonOpt = False) -> None:
    """Rebuild the search indexes from the catalog."""
    report = container().search.sync(rebuild=True)
    emit_json(report) if as_json else out.print(", ".join(f"{k}={v}" for k, v in report.items()))


@encoder_app.command("train")
@handles_errors
def encoder_train(as_json: JsonOpt = False) -> None:
    """Train the weight encoder on described adapters, then index every adapter's weights."""
    report = container().search.train_encoder()
    emit_json(report) if as_json else out.print(
        f"encoder {report['version']} trained on {report['adapters']} adapters; "
        f"{report.get('weights_count', 0)} adapters indexed by weights"
    )
