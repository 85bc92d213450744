"""Base-model, training and evaluation commands: models ls|prepare, train, eval."""

from __future__ import annotations

from pathlib import Path
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
from hub.cli.one_value_options import LoradexTyper
from hub.core.names import AdapterRef

models_app = LoradexTyper(
    help="Base models loradex can load (GGUF from pip packages).", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("ls")
@handles_errors
def models_ls(as_json: JsonOpt = False) -> None:
    """List loadable base models and whether they are converted yet."""
    docs = container().models.list_models()
    if as_json:
        emit_json({"data": docs, "count": len(docs)})
        return
    for d in docs:
        mark = "prepared" if d["prepared"] else "not prepared"
        out.print(f"{d['name']:<24} {d['hf_id']:<40} {mark}", highlight=False)


@models_app.command("prepare")
@handles_errors
def models_prepare(
    name: Annotated[str, typer.Argument(help="Base model name (see `loradex models ls`).")],
    as_json: JsonOpt = False,
) -> None:
    """Convert a base model's GGUF to cached fp32 safetensors and register it."""
    info = container().models.prepare(name)
    if as_json:
        emit_json(info)
    else:
        out.print(
            f"{name}: {info['parameters']:,} parameters, fingerprint "
            f"{info['fingerprint'][:12]}…, cache {info['cache_path']}",
            highlight=False,
        )


@app.command("eval")
@handles_errors
def eval_cmd(
    adapter: Annotated[str, typer.Argument(metavar="NAME[@VERSION]")],
    task: Annotated[str, typer.Option(help="Zoo task name or a task file (.json/.jsonl).")],
    limit: Annotated[int | None, typer.Option(min=1, help="First N eval examples.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Evaluate an adapter on a task (zoo protocol: greedy, exact match); recorded on it."""
    outcome = container().models.evaluate(
        AdapterRef.parse(adapter), task, limit=limit, device=device, batch_size=batch_size
    )
    if as_json:
        emit_json(outcome.to_dict())
    else:
        out.print(
            f"{outcome.adapter} on {outcome.task}: accuracy {outcome.accuracy:.3f} "
            f"({outcome.n} examples, {outcome.seconds:.1f} s)"
        )


@app.command()
@handles_errors
def train(
    base: Annotated[str, typer.Option(help="Base model name (see `loradex models ls`).")],
    task: Annotated[str, typer.Option(help="Zoo task name or a task file.")],
    rank: Annotated[int, typer.Option(help="LoRA rank (1-1024).")],
    name: Annotated[str | None, typer.Option(help="Adapter name (default TASK.rRANK).")] = None,
    targets: Annotated[str, typer.Option(help="Comma-separated target modules.")] = "q_proj,v_proj",
    steps: Annotated[int, typer.Option(min=1)] = 200,
    lr: Annotated[float, typer.Option()] = 1e-3,
    batch: Annotated[int, typer.Option(min=1)] = 32,
    warmup: Annotated[int, typer.Option(min=0)] = 20,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Train a LoRA with the zoo recipe and register it (source `trained`, recipe recorded)."""
    from rich.progress import Progress

    task_ref = str(Path(task)) if Path(task).suffix in (".json", ".jsonl") else task
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        job = bar.add_task("training", total=steps)
        added = container().models.train(
            base=base,
            task_ref=task_ref,
            rank=rank,
            name=name,
            targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
            steps=steps,
            lr=lr,
            batch=batch,
            warmup=warmup,
            seed=seed,
            device=device,
            progress=lambda step, _total, _loss: bar.update(job, completed=step),
        )
    item = added.item
    if as_json:
        emit_json({**item.model_dump(mode="json"), "created": added.created})
    else:
        out.print(
            f"trained {registered_ref(item, added.created)} (final loss "
            f"{item.metadata.get('final_loss', '?')})"
        )
