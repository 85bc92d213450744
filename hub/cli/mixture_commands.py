"""``loradex mix``: train an X-LoRA mixture as a ``mixture`` job, in the foreground.

The job row makes the run visible to ``loradex jobs ls|show`` and cancellable from another shell
(``loradex jobs cancel ID``); Ctrl-C cancels it too. Bad input fails at submit time (exit 2) and
nothing is registered unless the job succeeds.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

import typer

from hub.cli.app import JsonOpt, app, container, emit_json, err, handles_errors, out
from hub.core.errors import HubError
from hub.core.names import AdapterRef


class JobFailed(HubError):
    code = "job_failed"


def _run_in_foreground(c: Any, job_id: str) -> Any:
    """Execute the job in a thread, mirror its progress, cancel it on Ctrl-C."""
    from rich.progress import Progress

    from hub.core.models import TERMINAL_JOB_STATES
    from hub.services.jobs import JobService, execute_job

    cancel = threading.Event()
    worker = threading.Thread(target=execute_job, args=(c, job_id, cancel), daemon=True)
    worker.start()
    jobs = JobService(c)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("mixing", total=1.0)
        try:
            while worker.is_alive():
                job = jobs.get(job_id)
                bar.update(task, completed=job.progress, description=job.message or "mixing")
                time.sleep(0.2)
        except KeyboardInterrupt:
            cancel.set()
            err.print("cancelling…")
            worker.join()
    worker.join()
    job = jobs.get(job_id)
    assert job.state in TERMINAL_JOB_STATES
    return job


@app.command()
@handles_errors
def mix(
    experts: Annotated[list[str], typer.Argument(metavar="NAME[@VERSION]...")],
    name: Annotated[str, typer.Option(help="Name of the mixture.")],
    task: Annotated[
        list[str] | None,
        typer.Option(
            help="Training task (zoo name or file) for an expert without one; "
            "EXPERT=TASK sets a given expert's. Repeatable."
        ),
    ] = None,
    routing: Annotated[str, typer.Option(help="prompt | token (X-LoRA per-token gate)")] = "prompt",
    objective: Annotated[
        str, typer.Option(help="route | lm (LM loss through the mixture)")
    ] = "route",
    depth: Annotated[int, typer.Option(help="Gate depth (X-LoRA xlora_depth).")] = 1,
    size: Annotated[int, typer.Option(help="Gate width at depth >= 2.")] = 256,
    layerwise: Annotated[bool, typer.Option(help="One prediction per adapted module.")] = False,
    temperature: Annotated[float, typer.Option(help="Softmax temperature.")] = 1.0,
    top_k: Annotated[int | None, typer.Option(help="Keep only the k largest scalings.")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 200,
    batch: Annotated[int, typer.Option(help="Examples per step (lm objective).")] = 8,
    examples: Annotated[int, typer.Option(help="Examples per expert (route objective).")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    description: Annotated[str, typer.Option(help="Description of the mixture.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Train an X-LoRA mixture (a gate over frozen experts) and register it, as a job."""
    from hub.core.seeds import check_seed
    from hub.services.jobs import JobService

    check_seed(seed)  # the code every command gives for a seed out of range
    c = container()
    spec = {
        "experts": experts, "name": name, "tasks": task or [], "routing": routing,
        "objective": objective, "depth": depth, "size": size, "layerwise": layerwise,
        "temperature": temperature, "top_k": top_k, "steps": steps, "batch": batch,
        "examples": examples, "lr": lr, "seed": seed, "description": description,
        "tags": tag or [], "device": device,
    }  # fmt: skip
    record = JobService(c).submit("mixture", spec)  # validates: bad input exits 2 here
    job = _run_in_foreground(c, record.id)
    if job.state != "succeeded":
        raise JobFailed(f"job {job.id} {job.state}: {job.error or job.message}")
    detail = c.registry.show(AdapterRef.parse(job.result))
    if as_json:
        emit_json({**detail.model_dump(mode="json", exclude={"config", "modules"}), "job": job.id})
        return
    summary = detail.metadata["mixture"]
    out.print(
        f"mixed {', '.join(summary['experts'])} into {detail.name}@{detail.version} "
        f"({summary['gate_parameters']:,} gate parameters, {summary['routing']} routing, "
        f"{detail.lineage.recipe['report']['seconds']:.1f} s)",  # type: ignore[index]
        highlight=False,
    )
