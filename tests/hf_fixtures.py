"""Fixtures for the Hugging Face Hub sync tests (a pytest plugin, listed in conftest): a fake Hub
on loopback (``tests/hf_fake_hub.py``) and a container whose ``hf_endpoint`` points at it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from hub.services.container import Container
from storage.safetensors_io import serialize_safetensors
from tests.api_helpers import make_container
from tests.factories import make_tensors, peft_config
from tests.hf_fake_hub import FakeHub

ALICE = "tok-alice"  # token of user "alice" on the fake Hub
CARD = """---
license: mit
tags:
- qa
- demo
- base_model:adapter:tiny-llama
base_model: tiny-llama
library_name: peft
---

# {title}

<!-- Provide a quick summary of what the model is/does. -->

{description}

## Model Details

- **Developed by:** [More Information Needed]
"""


@pytest.fixture
def isolated_hf_env(monkeypatch):
    """No ambient Hub credentials or endpoint leak into a test."""
    for var in ("HF_TOKEN", "HF_ENDPOINT", "LORADEX_HF_TOKEN", "LORADEX_HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # A machine-wide HF_HUB_OFFLINE=1 (read once, at import) must not block the loopback Hub.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub(tmp_path, isolated_hf_env) -> Iterator[FakeHub]:
    hub = FakeHub(tmp_path / "fake-hub", tokens={ALICE: "alice", "tok-bob": "bob"}, page_size=2)
    hub.start()
    yield hub
    hub.stop()


def hub_container(
    home: Path, hub: FakeHub, token: str | None = None, database_url: str | None = None, **kw: Any
) -> Container:
    settings = {"hf_endpoint": hub.url, "hf_token": token, "hf_timeout_s": 2.0, **kw}
    return make_container(home, database_url, **settings)


@pytest.fixture
def hf_container(tmp_path, fake_hub, catalog_url) -> Iterator[Container]:
    """Signed in as alice, on SQLite and PostgreSQL (``catalog_url``)."""
    container = hub_container(tmp_path / "home", fake_hub, ALICE, catalog_url)
    yield container
    container.catalog.close()


def adapter_files(seed: int = 1, *, card: str | None = None, **config: Any) -> dict[str, bytes]:
    files = {
        "adapter_config.json": json.dumps(peft_config(**config)).encode(),
        "adapter_model.safetensors": serialize_safetensors(make_tensors(seed=seed)),
    }
    if card is not None:
        files["README.md"] = card.encode()
    return files


def publish(
    hub: FakeHub,
    repo_id: str,
    seed: int = 1,
    *,
    card: bool = True,
    private: bool = False,
    **config: Any,
) -> str:
    """A PEFT adapter repo on the fake Hub (with a PEFT-template-like card); returns its sha.
    ``config`` overrides adapter_config.json fields (``base=...`` the base model)."""
    text = CARD.format(title=repo_id, description=f"Adapter {repo_id} answers questions.")
    files = adapter_files(seed, card=text if card else None, **config)
    return hub.add_repo(repo_id, files, private=private)


def blob_files(container: Container) -> list[str]:
    return sorted(p.name for p in container.settings.resolved_blob_dir.rglob("*") if p.is_file())


def all_versions(container: Container) -> list[tuple[str, int, str]]:
    items, _ = container.catalog.list_items(all_versions=True, limit=10_000)
    return [(i.name, i.version, i.source) for i in items]
