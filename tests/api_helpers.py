"""Build an API client over a fresh data dir (SQLite or PostgreSQL) and talk to it in tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api import create_app
from hub.config import Settings
from hub.services.container import Container
from hub.services.tokens import TokenService
from tests.factories import write_adapter_dir

ERROR_KEYS = {"code", "message", "details"}


def make_container(home: Path, database_url: str | None = None, **settings: Any) -> Container:
    container = Container(Settings(home=home, database_url=database_url, **settings))
    container.init_home()
    return container


def new_token(container: Container, name: str = "test") -> str:
    return TokenService(container.catalog).create(name).token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def api_client(container: Container, *, run_jobs: bool = True) -> Iterator[TestClient]:
    """A TestClient with the app's lifespan running (job pool started, then shut down)."""
    app = create_app(container, run_jobs=run_jobs)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def upload_files(src: Path) -> dict[str, tuple[str, bytes]]:
    return {
        "adapter_config.json": ("adapter_config.json", (src / "adapter_config.json").read_bytes()),
        "adapter_model.safetensors": (
            "adapter_model.safetensors",
            (src / "adapter_model.safetensors").read_bytes(),
        ),
    }


def upload(client: TestClient, token: str, name: str, src: Path, **fields: str) -> Any:
    return client.post(
        "/adapters", headers=auth(token), data={"name": name, **fields}, files=upload_files(src)
    )


def seed_adapters(client: TestClient, token: str, tmp: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        r = upload(client, token, name, write_adapter_dir(tmp / f"src-{name}", seed=i + 1))
        assert r.status_code == 201, r.text


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


def poll_job(client: TestClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in {"succeeded", "failed", "cancelled"} or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.05)


def stored_state(client: TestClient, home: Path) -> tuple[list[Any], list[str]]:
    """What a refused write must leave untouched: every version listed, every blob file."""
    listing = client.get("/adapters", params={"all_versions": True, "limit": 1000}).json()["data"]
    blobs = sorted(p.name for p in (home / "blobs").rglob("*") if p.is_file())
    return listing, blobs
