"""SG-LoRA commands: ``generator train``, ``generator show`` and ``generate-adapter``."""

from __future__ import annotations

from typing import Annotated, Any

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
)
from hub.cli.one_value_options import LoradexTyper

generator_app = LoradexTyper(
    help="The SG-LoRA generator that writes adapters for unseen tasks.", no_args_is_help=True
)
app.add_typer(generator_app, name="generator")

BaseOpt = Annotated[
    str | None,
    typer.Option("--base", help="Base model (hf id or loadable name); default: the only one."),
]


def _progress_bar(label: str):
    from rich.progress import BarColumn, Progress, TextColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@generator_app.command("train")
@handles_errors
def generator_train(
    base: BaseOpt = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Leave this adapter out (repeatable).")
    ] = None,
    k: Annotated[
        int | None, typer.Option("--k", help="Experts aggregated per condition [default: 4].")
    ] = None,
    tau: Annotated[
        float | None, typer.Option(help="Softmax temperature over similarities [default: 0.05].")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="CVAE training steps [default: 1000].")] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialization and sampling.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Train the SG-LoRA generator on the catalog's described adapters for a base model."""
    _check_train_options(k, tau, steps, seed)
    given = {"k": k, "tau": tau, "steps": steps, "seed": seed}
    settings = {key: value for key, value in given.items() if value is not None}
    with _progress_bar("training") as bar:
        task = bar.add_task("", total=1.0)
        report = container().generators.train(
            base,
            exclude=exclude or [],
            settings=settings,
            progress=lambda f, msg: bar.update(task, completed=f, description=msg),
        )
    if as_json:
        emit_json(report)
        return
    r = report["report"]
    out.print(
        f"generator {report['version'][:12]} for {report['base_model']}: "
        f"{r['experts']} experts, {r['modules']} modules, {r['pairs']} training pairs, "
        f"loss {r['final_loss']:.4f} ({report['seconds']:.1f} s)",
        highlight=False,
    )


def _check_train_options(k: int | None, tau: float | None, steps: int | None, seed: int) -> None:
    from hub.core.errors import BadInputError
    from hub.core.seeds import check_seed

    if k is not None and not 1 <= k <= 10_000:
        raise BadInputError(f"--k must be 1..10000, got {k}", code="k_out_of_range")
    if tau is not None and not 0 < tau <= 100:
        raise BadInputError(f"--tau must be in (0, 100], got {tau}", code="tau_out_of_range")
    if steps is not None and not 1 <= steps <= 100_000:
        raise BadInputError(f"--steps must be 1..100000, got {steps}")
    check_seed(seed)


@generator_app.command("show")
@handles_errors
def generator_show(base: BaseOpt = None, as_json: JsonOpt = False) -> None:
    """Show the current generator of a base model: version, experts, settings."""
    doc = container().generators.status(base)
    if as_json:
        emit_json(doc)
        return
    out.print(
        f"generator {doc['version'][:12]} for {doc['base_model']}: "
        f"{len(doc['experts'])} experts, k={doc['settings']['k']}, tau={doc['settings']['tau']}",
        highlight=False,
    )


@app.command("generate-adapter")
@handles_errors
def generate_adapter(
    description: Annotated[str, typer.Argument(help="The unseen task, in plain words.")],
    name: Annotated[str, typer.Option(help="Name of the generated adapter.")],
    base: BaseOpt = None,
    k: Annotated[
        int | None, typer.Option("--k", help="Experts to draw on (default: the generator's).")
    ] = None,
    tau: Annotated[float | None, typer.Option(help="Softmax temperature.")] = None,
    samples: Annotated[int, typer.Option(help="Latent samples averaged (0: prior mean).")] = 8,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    rank: Annotated[int, typer.Option(help="Rank of the generated LoRA.")] = 16,
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate an adapter for an unseen task from its description alone (SG-LoRA)."""
    with _progress_bar("generating") as bar:
        task = bar.add_task("", total=1.0)
        outcome = container().generators.generate(
            description,
            name=name,
            base=base,
            k=k,
            tau=tau,
            samples=samples,
            seed=seed,
            rank=rank,
            tags=tag or [],
            progress=lambda f, msg: bar.update(task, completed=f, description=msg),
        )
    item = outcome.added.item
    drew: list[dict[str, Any]] = [d.to_dict() for d in outcome.drew_on]
    if as_json:
        emit_json(
            {
                **item.model_dump(mode="json"),
                "created": outcome.added.created,
                "generator_version": outcome.generator_version,
                "drew_on": drew,
            }
        )
        return
    ref = registered_ref(item, outcome.added.created)
    out.print(f"generated {ref} (rank {item.rank}); drew on:", highlight=False)
    for d in drew:
        out.print(
            f"  {d['weight']:.3f}  {d['name']}@{d['version']}  (similarity {d['similarity']:.3f})",
            highlight=False,
        )
