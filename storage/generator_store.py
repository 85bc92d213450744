"""Versioned generator artifacts (SG-LoRA) next to the catalog: ``<root>/<slot>/``.

Each trained artifact is stored content-addressed as ``<sha256>.safetensors`` (temp file, fsync,
atomic rename, directory fsync) and never rewritten, so an adapter generated from an older
version can still name the exact file it came from. ``current.json`` points at the version in
use (written the same way, after the artifact): a crash leaves either the old pointer or the new
one, never a pointer to a missing file. Reads re-hash the file against its name.

Slots are free-form keys (a base model id such as ``HuggingFaceTB/SmolLM2-135M-Instruct``),
turned into a safe directory name plus a hash so two keys never share a directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from hub.core.errors import BlobCorruptedError, NotFoundError, StorageError
from hub.runtime.files import atomic_write

POINTER = "current.json"
SUFFIX = ".safetensors"


def slot_dir_name(slot: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", slot).strip("._")[:80] or "slot"
    return f"{safe}-{hashlib.sha256(slot.encode()).hexdigest()[:8]}"


def corrupted_pointer(path: Path, why: str) -> StorageError:
    return StorageError(
        f"generator pointer {path} is corrupted: {why}", code="generator_corrupted", path=str(path)
    )


class GeneratorStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _dir(self, slot: str) -> Path:
        return self.root / slot_dir_name(slot)

    def put(self, slot: str, data: bytes, info: dict[str, Any]) -> str:
        """Store ``data`` and make it the slot's current version; returns the version (sha256).
        ``info`` is kept in the pointer (what `generator show` prints without loading)."""
        version = hashlib.sha256(data).hexdigest()
        target = self._dir(slot) / f"{version}{SUFFIX}"
        if not target.exists():
            atomic_write(target, data)
        pointer = {"slot": slot, "version": version, "file": target.name, **info}
        atomic_write(self._dir(slot) / POINTER, json.dumps(pointer, indent=2).encode())
        return version

    def pointer_path(self, slot: str) -> Path:
        return self._dir(slot) / POINTER

    def current(self, slot: str) -> dict[str, Any] | None:
        """The pointer document of the slot's current version, or None before any ``put``.
        A pointer that is not JSON, not an object or names no sha256 version raises
        ``StorageError`` (code ``generator_corrupted``) naming the file."""
        path = self.pointer_path(slot)
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise corrupted_pointer(path, f"not readable JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise corrupted_pointer(path, f"expected a JSON object, got {type(doc).__name__}")
        version = doc.get("version")
        if not isinstance(version, str) or not re.fullmatch(r"[0-9a-f]{64}", version):
            raise corrupted_pointer(path, f"'version' is not a sha256 hex digest: {version!r}")
        return dict(doc)

    def get(self, slot: str, version: str) -> bytes:
        path = self._dir(slot) / f"{version}{SUFFIX}"
        if not re.fullmatch(r"[0-9a-f]{64}", version) or not path.is_file():
            raise NotFoundError(f"no generator version {version[:12]} for {slot!r}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != version:
            raise BlobCorruptedError(
                f"generator artifact {path} does not match its digest; retrain it",
                path=str(path),
            )
        return data

    def versions(self, slot: str) -> list[str]:
        folder = self._dir(slot)
        if not folder.is_dir():
            return []
        return sorted(p.name.removesuffix(SUFFIX) for p in folder.glob(f"*{SUFFIX}"))
