"""Server commands: serve (REST API + web catalog), token create/ls/revoke, jobs ls/show/cancel."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer

from hub.cli.app import STATE, JsonOpt, app, container, emit_json, handles_errors, out
from hub.cli.one_value_options import LoradexTyper
from hub.core.errors import BadInputError, ConflictError
from hub.core.models import JobRecord, JobState


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


token_app = LoradexTyper(
    help="API bearer tokens (writes over REST need one).", no_args_is_help=True
)
jobs_app = LoradexTyper(
    help="Jobs: merges and other long work run by the server.", no_args_is_help=True
)
app.add_typer(token_app, name="token")
app.add_typer(jobs_app, name="jobs")


@app.command()
@handles_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Job worker threads (else jobs_workers).")
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="uvicorn log level.")
    ] = LogLevel.info,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="HTTP worker processes (reads and search scale with cores); one runs the jobs.",
        ),
    ] = 1,
) -> None:
    """Serve the REST API (OpenAPI at /docs), the web catalog (/ui) and jobs (threads or Ray).

    Jobs run in this process's thread pool, or as tasks on a Ray cluster with the setting
    ``jobs_backend = "ray"`` (README: "Scaling out")."""
    import uvicorn

    _check_bindable(host, port)
    # The server reads settings from the environment like any command; pass ours on. With
    # several processes, the one holding <home>/jobs.lock owns the job pool and restart
    # recovery of this catalog; the others queue jobs for it (hub/services/jobs_runner.py).
    if STATE.data_dir is not None:
        os.environ["LORADEX_HOME"] = str(STATE.data_dir)
    if workers is not None:
        os.environ["LORADEX_JOBS_WORKERS"] = str(workers)
    # OpenMP threads (torch, faiss) sleep instead of spinning while they wait for work: a server
    # runs many short forward passes among request threads, and spinning threads steal the
    # cores those need (measured: 2-thread MiniLM batches cost 8x more CPU when spinning).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if processes > 1:  # the processes share the cores: one intra-op thread pool per core
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    # By import string, not import: the api and cli delivery layers stay independent.
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        log_level=log_level.value,
        workers=processes,
    )


def _check_bindable(host: str, port: int) -> None:
    """A port in use or an unknown host is one error line (exit 1), before uvicorn starts
    and exits 3 with its own log line; the probe closes at once, so uvicorn can bind."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInputError(f"cannot bind to host {host[:100]!r}: {exc}", code="bad_host") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(addr)
        except OSError as exc:
            raise ConflictError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}", code="address_in_use"
            ) from None


# -- tokens ---------------------------------------------------------------------------------
def _tokens():  # -> TokenService
    from hub.services.tokens import TokenService

    return TokenService(container().catalog)


@token_app.command("create")
@handles_errors
def token_create(
    name: Annotated[str, typer.Option(help="A label to recognise the token by.")] = "default",
    as_json: JsonOpt = False,
) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    new = _tokens().create(name)
    if as_json:
        emit_json({"id": new.id, "name": new.name, "token": new.token})
    else:
        out.print(f"token {new.id} ({new.name}); it is shown only this once:", highlight=False)
        out.print(new.token, markup=False, highlight=False)


@token_app.command("ls")
@handles_errors
def token_ls(as_json: JsonOpt = False) -> None:
    """List tokens (ids, names, dates; never the tokens themselves)."""
    records = _tokens().list()
    docs = [
        {
            "id": r.id,
            "name": r.name,
            "created_at": r.created_at.isoformat(),
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in records
    ]
    if as_json:
        emit_json({"data": docs, "count": len(docs)})
        return
    for d in docs:
        state = f"revoked {d['revoked_at']}" if d["revoked_at"] else "active"
        out.print(f"{d['id']}\t{d['name']}\t{d['created_at']}\t{state}", highlight=False)


@token_app.command("revoke")
@handles_errors
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", min=1, max=2**63 - 1)],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: requests using it get 401 from now on."""
    record = _tokens().revoke(token_id)
    if as_json:
        emit_json({"id": record.id, "name": record.name, "revoked": True})
    else:
        out.print(f"revoked token {record.id} ({record.name})", highlight=False)


# -- jobs -----------------------------------------------------------------------------------
def _jobs():  # -> JobService (not started: these commands only read and flag)
    from hub.services.jobs import JobService

    return JobService(container())


def _print_job(j: JobRecord) -> None:
    tail = j.result or j.error or j.message
    out.print(f"{j.id}  {j.kind:<10} {j.state:<10} {j.progress:>4.0%}  {tail}", highlight=False)


@jobs_app.command("ls")
@handles_errors
def jobs_ls(
    state: Annotated[JobState | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    records = _jobs().list(state, limit=limit)
    if as_json:
        emit_json({"data": [r.model_dump(mode="json") for r in records], "count": len(records)})
        return
    for r in records:
        _print_job(r)


@jobs_app.command("show")
@handles_errors
def jobs_show(
    job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Show one job: state, progress, message, result or error."""
    record = _jobs().get(job_id)
    emit_json(record) if as_json else _print_job(record)


@jobs_app.command("cancel")
@handles_errors
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Cancel a job: queued ones at once, running ones at their next progress report."""
    record = _jobs().cancel(job_id)
    emit_json(record) if as_json else _print_job(record)
