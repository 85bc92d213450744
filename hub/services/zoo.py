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
from hub.core.json_input import JSON_ERRORS
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
    except (OSError, *JSON_ERRORS) as exc:
        raise BadInputError(
            f"{path} is not a valid zoo manifest: not readable JSON: {exc}",
            code="zoo_manifest_invalid",
        ) from exc
    problem = _manifest_problem(manifest)
    if problem:
        raise BadInputError(
            f"{path} is not a valid zoo manifest: {problem}", code="zoo_manifest_invalid"
        )
    return manifest


def _manifest_problem(manifest: Any) -> str | None:
    """The first shape defect of a zoo manifest, named by its key path (None when valid)."""
    if not isinstance(manifest, dict):
        return f"expected a JSON object, got {type(manifest).__name__}"
    for key in ("base_model", "adapters"):
        if key not in manifest:
            return f"missing key {key!r}"
    base = manifest["base_model"]
    if not isinstance(base, dict):
        return f"'base_model' must be an object, got {type(base).__name__}"
    if not isinstance(base.get("id"), str) or not base["id"]:
        return (
            "missing key 'base_model.id'"
            if "id" not in base
            else ("'base_model.id' must be a non-empty string")
        )
    if "gguf_sha256" in base and not isinstance(base["gguf_sha256"], str):
        return "'base_model.gguf_sha256' must be a string"
    adapters = manifest["adapters"]
    if not isinstance(adapters, list):
        return f"'adapters' must be a list, got {type(adapters).__name__}"
    for i, record in enumerate(adapters):
        where = f"adapters[{i}]"
        if not isinstance(record, dict):
            return f"{where} must be an object, got {type(record).__name__}"
        for key in ("task", "family", "adapter", "descriptions", "adapter_acc"):
            if key not in record:
                return f"missing key {key!r} in {where}"
        for key in ("task", "family", "adapter"):
            if not isinstance(record[key], str) or not record[key]:
                return f"'{where}.{key}' must be a non-empty string"
        descriptions = record["descriptions"]
        if (
            not isinstance(descriptions, list)
            or not descriptions
            or not all(isinstance(d, str) for d in descriptions)
        ):
            return f"'{where}.descriptions' must be a non-empty list of strings"
        acc = record["adapter_acc"]
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not 0 <= acc <= 1:
            return f"'{where}.adapter_acc' must be a number between 0 and 1"
        if "task_file" in record and not isinstance(record["task_file"], str):
            return f"'{where}.task_file' must be a string"
    return None


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
    except (OSError, *JSON_ERRORS, KeyError, TypeError, AttributeError):
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
