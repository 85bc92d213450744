"""Import the benchmark zoo (../shared/zoo) into the catalog.

Each zoo adapter becomes an adapter named after its task, with the first task description as its
description, its family and ``zoo`` as tags, the recorded accuracies and recipe as metadata, and the
recorded adapter accuracy as an evaluation record. The zoo's base model (SmolLM2-135M-Instruct,
fingerprinted by its GGUF file's sha256) is registered first so every adapter is shape-checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from hub.core.errors import BadInputError
from hub.core.models import AdapterItem, AdapterMeta, EvaluationRecord
from hub.services.registry import RegistryService
from storage.peft_format import ParsedAdapter, read_peft_dir

SMOLLM2_CONFIG = "smollm2-135m-instruct.config.json"
IMPORT_CHUNK = 16  # adapters per catalog commit (progress granularity; all-or-nothing each)


def read_manifest(zoo_dir: Path) -> dict[str, Any]:
    path = Path(zoo_dir) / "manifest.json"
    if not path.is_file():
        raise BadInputError(f"{zoo_dir} is not a zoo: {path.name} is missing")
    try:
        manifest = json.loads(path.read_text())
        manifest["adapters"] and manifest["base_model"]["id"]  # noqa: B018 - shape check
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path} is not a valid zoo manifest: {exc}") from exc
    return manifest


def import_zoo(
    registry: RegistryService,
    zoo_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[AdapterItem, bool]]:
    zoo_dir = Path(zoo_dir)
    manifest = read_manifest(zoo_dir)
    base = manifest["base_model"]
    config = json.loads(resources.files("hub.data").joinpath(SMOLLM2_CONFIG).read_text())
    registry.register_base_model(base["id"], config, fingerprint=base.get("gguf_sha256"))
    results: list[tuple[AdapterItem, bool]] = []
    records = manifest["adapters"]
    for chunk in range(0, len(records), IMPORT_CHUNK):
        batch = [_zoo_entry(zoo_dir, record) for record in records[chunk : chunk + IMPORT_CHUNK]]
        for result in registry.add_many(batch):
            _ensure_evaluation(registry, result.item)
            results.append((result.item, result.created))
            if progress:
                progress(result.item.name)
    return results


def _zoo_entry(zoo_dir: Path, record: dict[str, Any]) -> tuple[ParsedAdapter, AdapterMeta, dict]:
    meta = AdapterMeta(
        name=record["task"],
        description=record["descriptions"][0],
        tags=[record["family"], "zoo"],
        license="apache-2.0",
    )
    metadata: dict[str, Any] = {
        k: record[k]
        for k in ("task", "family", "descriptions", "recipe", "base_acc", "adapter_acc")
        if k in record
    }
    examples = _task_examples(zoo_dir, record)
    if examples:
        metadata["examples"] = examples  # search cards embed them (retrieval/cards.py)
    parsed = read_peft_dir(zoo_dir / record["adapter"])
    return parsed, meta, {"source": "zoo", "metadata": metadata}


def _task_examples(zoo_dir: Path, record: dict[str, Any], n: int = 3) -> list[dict[str, str]]:
    """The first ``n`` training examples of the record's task file (none if it is missing)."""
    path = zoo_dir / record.get("task_file", f"tasks/{record['task']}.json")
    try:
        train = json.loads(path.read_text()).get("train", [])
        return [{"input": str(e["input"]), "output": str(e["output"])} for e in train[:n]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _ensure_evaluation(registry: RegistryService, item: AdapterItem) -> None:
    """Record the zoo's measured accuracy once. Also runs on re-import, so a kill between the
    version commit and this insert heals."""
    if registry.catalog.get_detail(item.name, item.version).evaluations:
        return
    registry.catalog.add_evaluation(
        registry.catalog.version_id(item.name, item.version),
        EvaluationRecord(
            task=item.metadata["task"],
            accuracy=float(item.metadata["adapter_acc"]),
            n=200,
            details={"source": "zoo manifest (recorded at build time)"},
        ),
    )
