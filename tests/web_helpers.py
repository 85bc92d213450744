"""Catalogs for the web tests: a few real zoo adapters (imported like ``loradex import-zoo``)
and tiny synthetic ones with lineage, registered straight through the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.core.models import AdapterMeta
from hub.services.container import Container
from hub.services.zoo import import_zoo
from storage.peft_format import read_peft_dir
from tests.cli_helpers import ZOO
from tests.factories import write_adapter_dir


def mini_zoo(tmp: Path, tasks: list[str]) -> Path:
    """A zoo directory holding only ``tasks`` (manifest subset; adapter dirs symlinked)."""
    if not (ZOO / "manifest.json").is_file():
        pytest.skip(f"the benchmark zoo is not at {ZOO}")
    manifest = json.loads((ZOO / "manifest.json").read_text())
    records = [r for r in manifest["adapters"] if r["task"] in tasks]
    assert len(records) == len(tasks), f"unknown zoo tasks in {tasks}"
    out = tmp / "mini-zoo"
    (out / "adapters").mkdir(parents=True)
    for r in records:
        (out / r["adapter"]).symlink_to(ZOO / r["adapter"], target_is_directory=True)
    (out / "manifest.json").write_text(json.dumps({**manifest, "adapters": records}))
    return out


def import_zoo_subset(container: Container, tmp: Path, tasks: list[str]) -> None:
    import_zoo(container.registry, mini_zoo(tmp, tasks))


def add_tiny(
    container: Container,
    tmp: Path,
    name: str,
    *,
    seed: int,
    parents: tuple[tuple[str, str, float | None], ...] = (),
    source: str = "upload",
    r: int = 4,
    description: str = "",
    tags: tuple[str, ...] = (),
    license: str | None = None,
) -> None:
    """A 2-layer synthetic adapter; ``parents`` are (name, relation, weight) lineage edges."""
    src = write_adapter_dir(tmp / f"src-{name}-{seed}", seed=seed, r=r)
    edges = [(container.catalog.version_id(p), rel, w) for p, rel, w in parents]
    meta = AdapterMeta(name=name, description=description, tags=list(tags), license=license)
    container.registry.add_parsed(read_peft_dir(src), meta, parents=edges, source=source)
