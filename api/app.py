"""The app factory. ``create_app(container)`` for tests and embedding; ``app_from_env`` is what
``loradex serve`` hands uvicorn (settings from the environment, like every other command)."""

from __future__ import annotations

import gc
import importlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

import hub
from api.deps import StrictQuery
from api.errors import install_error_handlers
from api.head import HeadAsGet
from api.routers import (
    adapters,
    generations,
    health,
    jobs,
    merges,
    methods,
    mixtures,
    search,
    transfers,
)
from api.routers import sync as sync_router
from api.strict_json import RejectDuplicateJsonKeys
from hub.config import load_settings, misspelt_settings
from hub.core.errors import HubError
from hub.services.container import Container
from hub.services.jobs import JobService
from hub.services.tokens import TokenService

log = logging.getLogger(__name__)


def warm_then_freeze(container: Container) -> None:
    """Load the search indexes and text model before the first query, then move everything
    alive at start-up (torch, the model, indexes: ~500k objects) out of the garbage
    collector's reach: a full collection over them paused the server for up to a second."""
    try:
        container.search.warm()
    except HubError as exc:  # a known state (stale index, ...): queries answer it by name
        log.warning("search warm-up: [%s] %s", exc.code, exc.message)
    except Exception:  # noqa: BLE001 - the first search reports (and retries) the problem
        log.exception("search warm-up failed")
    gc.collect()
    gc.freeze()


def create_app(
    container: Container, *, run_jobs: bool = True, warm: bool = False, served: bool = False
) -> FastAPI:
    """An app over ``container``. With ``run_jobs`` the app's lifespan recovers jobs left by a
    crash and runs the job worker pool (set it False for an API that only queues). With
    ``warm`` search is made ready in the background right after start-up. ``served`` (one of
    possibly several `loradex serve` processes): only the process holding ``<home>/jobs.lock``
    runs jobs, including those the others queue."""
    lock = container.settings.home / "jobs.lock" if served else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_jobs:
            await run_in_threadpool(lambda: app.state.jobs.start(exclusive=lock))
        if warm:
            threading.Thread(
                target=warm_then_freeze, args=(container,), name="loradex-warm", daemon=True
            ).start()
        try:
            yield
        finally:
            await run_in_threadpool(app.state.jobs.shutdown)

    app = FastAPI(
        title="loradex",
        version=hub.__version__,
        description="Registry, retrieval and merging hub for LoRA adapters. Writes need "
        "`Authorization: Bearer <token>` (`loradex token create`).",
        lifespan=lifespan,
    )
    app.state.container = container
    app.state.jobs = JobService(container)
    app.state.tokens = TokenService(container.catalog)
    routers = (health, adapters, methods, merges, mixtures, generations, transfers, sync_router)
    for module in (*routers, jobs, search):
        app.include_router(module.router, dependencies=[StrictQuery])
    # The web catalog: a sibling delivery layer, so mounted by module name, never imported.
    importlib.import_module("web").mount(app)
    install_error_handlers(app)
    app.add_middleware(HeadAsGet)
    app.add_middleware(RejectDuplicateJsonKeys)
    return app


_SETTINGS_CHECKED: list[bool] = []  # uvicorn may call the factory twice in one process


def app_from_env() -> FastAPI:
    if not _SETTINGS_CHECKED:
        _SETTINGS_CHECKED.append(True)
        for note in misspelt_settings():
            log.warning("%s", note)
    container = Container(load_settings())
    container.init_home()
    return create_app(container, warm=True, served=True)
