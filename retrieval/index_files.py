"""Index persistence: atomic writes, the sidecar, and refusing stale or corrupted files.

Every file is written with `hub.runtime.files.atomic_write` (temp name, fsync, rename), so a reader
sees the old or the new file, never half of one. ``load`` checks the sidecar and the hashes
*before* FAISS parses anything, and turns every defect into :class:`IndexMismatchError`
telling to run ``loradex reindex``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import HubError


class IndexMismatchError(HubError):
    """The stored index was built by another embedder / dim / format, or is corrupted."""

    code = "index_stale"
    kind = "conflict"


def ids_path(path: Path) -> Path:
    return path.with_name(path.name + ".ids.npy")


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def stale(path: Path, why: str) -> IndexMismatchError:
    return IndexMismatchError(
        f"search index {path} cannot be used: {why}; run `loradex reindex`",
        path=str(path),
        reason=why,
    )


def check(ok: bool, path: Path, why: str) -> None:
    if not ok:
        raise stale(path, why)


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise stale(path, f"cannot read {path.name} ({exc.strerror})") from exc


SIDECAR_FIELDS = frozenset(
    {"format_version", "embedder_id", "dim", "backend", "params", "count"}
    | {"backend_policy", "ann_threshold", "ann_backend", "index_sha256", "ids_sha256"}
)


def read_sidecar(path: Path) -> dict[str, Any]:
    raw = read(sidecar_path(path))
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise stale(path, "sidecar is not valid JSON") from exc
    check(isinstance(meta, dict), path, "sidecar is not a JSON object")
    missing = sorted(SIDECAR_FIELDS - set(meta))
    check(not missing, path, f"sidecar lacks {', '.join(missing)}")
    check(isinstance(meta["params"], dict), path, "sidecar params is not an object")
    return meta
