"""The app factory. ``create_app(container)`` for tests and embedding; ``app_from_env`` is what
``loradex serve`` hands uvicorn (settings from the environment, like every other command)."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

import hub
from api.errors import install_error_handlers
from api.routers import adapters, generations, health, jobs, merges, methods, search
from api.routers import sync as sync_router
from hub.config import load_settings
from hub.services.container import Container
from hub.services.jobs import JobService
from hub.services.tokens import TokenService


def create_app(container: Container, *, run_jobs: bool = True) -> FastAPI:
    """An app over ``container``. With ``run_jobs`` the app's lifespan recovers jobs left by a
    crash and runs the job worker pool (set it False for an API that only queues)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_jobs:
            await run_in_threadpool(app.state.jobs.start)
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
    for module in (health, adapters, methods, merges, jobs, search, generations):
        app.include_router(module.router)
    # The web catalog: a sibling delivery layer, so mounted by module name, never imported.
    importlib.import_module("web").mount(app)
    app.include_router(sync_router.router)
    install_error_handlers(app)
    return app


def app_from_env() -> FastAPI:
    container = Container(load_settings())
    container.init_home()
    return create_app(container)
