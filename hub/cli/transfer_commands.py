"""``loradex transfer``: move an adapter to another base model (Trans-LoRA)."""

from __future__ import annotations

from typing import Annotated

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
from hub.core.names import AdapterRef


@app.command()
@handles_errors
def transfer(
    adapter: Annotated[str, typer.Argument(metavar="NAME[@VERSION]")],
    to: Annotated[str, typer.Option("--to", help="Target base model (`loradex models ls`).")],
    name: Annotated[str, typer.Option(help="Name of the transferred adapter.")],
    task: Annotated[
        str | None, typer.Option(help="Task name or file; default: the adapter's own task.")
    ] = None,
    seeds: Annotated[int, typer.Option(min=2, help="Seed examples from the task file.")] = 5,
    synthetic: Annotated[int, typer.Option(min=1, help="Synthetic inputs to keep.")] = 250,
    steps: Annotated[int, typer.Option(min=1, help="Student training steps.")] = 200,
    batch: Annotated[int, typer.Option(min=1, help="Student batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Student learning rate.")] = 1e-3,
    rank: Annotated[int | None, typer.Option(min=1, help="Student rank; default: source's.")] = (
        None
    ),
    filter_mode: Annotated[
        str, typer.Option("--filter", help="discriminator | none (keep every new input).")
    ] = "discriminator",
    teacher_filter: Annotated[
        str,
        typer.Option(help="confidence (keep inputs the teacher answers confidently) | none."),
    ] = "confidence",
    teacher_margin: Annotated[
        float, typer.Option(help="Confidence threshold: x the teacher's NLL on real inputs.")
    ] = 2.0,
    disc_steps: Annotated[int, typer.Option(min=1, help="Discriminator steps.")] = 100,
    disc_real: Annotated[int, typer.Option(min=2, help="Real inputs it trains on.")] = 250,
    disc_batch: Annotated[int, typer.Option(min=1, help="Discriminator batch size.")] = 16,
    gen_batch: Annotated[int, typer.Option(min=1, help="Prompts per generator round.")] = 16,
    max_rounds: Annotated[int, typer.Option(min=1, help="Cap on generator rounds.")] = 200,
    generator: Annotated[str, typer.Option(help="Base model writing inputs.")] = (
        "smollm2-135m-instruct"
    ),
    description: Annotated[str | None, typer.Option(help="Default: the source's.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Seed (0..2^31-1).")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Move an adapter to another base model with synthetic data (Trans-LoRA).

    The result is registered with source `transferred`, a `transferred` lineage edge to the
    source version and the full recipe."""
    from rich.progress import Progress

    from hub.core.seeds import check_seed
    from hub.services.transfer import TransferParams

    check_seed(seed)  # the code every command gives for a seed out of range
    params = TransferParams.model_validate(
        {
            "seeds": seeds, "synthetic": synthetic, "steps": steps, "batch": batch, "lr": lr,
            "rank": rank, "filter": filter_mode, "disc_steps": disc_steps,
            "teacher_filter": teacher_filter, "teacher_margin": teacher_margin,
            "disc_real": disc_real, "disc_batch": disc_batch, "gen_batch": gen_batch,
            "max_rounds": max_rounds, "seed": seed,
        }
    )  # fmt: skip
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        job = bar.add_task("transferring", total=1.0)
        added = container().transfers.transfer(
            AdapterRef.parse(adapter),
            to=to,
            name=name,
            task_ref=task,
            generator=generator,
            params=params,
            description=description,
            tags=tag or [],
            device=device,
            progress=lambda f, msg: bar.update(job, completed=f, description=msg),
        )
    item = added.item
    if as_json:
        emit_json({**item.model_dump(mode="json"), "created": added.created})
    else:
        kept = item.metadata.get("synthetic_kept")
        out.print(
            f"transferred {adapter} to {item.base_model} as {registered_ref(item, added.created)} "
            f"({kept} synthetic inputs kept)",
            highlight=False,
        )
