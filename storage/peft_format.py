"""PEFT LoRA directories (``adapter_config.json`` + ``adapter_model.safetensors``) <->
:class:`LoraAdapter`.

Reading validates everything an upload can get wrong (format, pairing, shapes, ranks vs the
config, finiteness, target modules) and refuses pickled checkpoints without opening them.
Writing is atomic: files go to a temp dir beside the target, are fsynced, then renamed in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import ConflictError, InvalidAdapterError, PickleRefusedError
from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from hub.runtime.files import fsync_dir
from storage.peft_config import (
    MAX_CONFIG_BYTES,
    LoraSettings,
    architecture_of,
    lora_settings,
    parse_config_bytes,
    peft_config_for,
)
from storage.peft_keys import PREFIX, KeyInventory, classify_keys, not_mergeable_reason
from storage.safetensors_io import check_finite, parse_safetensors, serialize_safetensors

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ParsedAdapter",
    "peft_config_for",
    "read_peft_bytes",
    "read_peft_dir",
    "write_peft_dir",
]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
MAX_WEIGHTS_BYTES = 16 << 30
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class ParsedAdapter:
    adapter: LoraAdapter
    config: dict[str, Any]
    weights_bytes: bytes
    dtype: str
    architecture: str | None


# ---------------------------------------------------------------- reading


def _read_regular(path: Path, cap: int, code: str) -> bytes:
    """Read a regular file of at most ``cap`` bytes. O_NONBLOCK keeps a FIFO from hanging us;
    fstat on the open fd avoids a check-then-open race."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidAdapterError(f"{path.name} is not a regular file", code=code)
        if info.st_size > cap:
            raise InvalidAdapterError(f"{path.name} is {info.st_size} bytes, over {cap}", code=code)
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(cap + 1)
    finally:
        os.close(fd)
    if len(data) > cap:  # the file grew after fstat
        raise InvalidAdapterError(f"{path.name} is over {cap} bytes", code=code)
    return data


def _refuse_pickles(path: Path) -> None:
    pickles = sorted(p.name for p in path.iterdir() if p.name.lower().endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise PickleRefusedError(
            f"{path} has only pickled weights ({', '.join(pickles)}), which can execute code "
            "when loaded and are never read. Convert them to adapter_model.safetensors in a "
            "trusted environment, e.g. with safetensors.torch.save_file(torch.load(...)).",
            code="pickle_refused",
            files=pickles,
        )


def read_peft_dir(path: str | os.PathLike[str]) -> ParsedAdapter:
    """Read and validate a PEFT LoRA directory."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidAdapterError(f"{path} is not an adapter directory", code="config_missing")
    if not (path / WEIGHTS_NAME).exists():
        _refuse_pickles(path)
    if not (path / CONFIG_NAME).exists():
        raise InvalidAdapterError(f"{path} has no {CONFIG_NAME}", code="config_missing")
    if not (path / WEIGHTS_NAME).exists():
        raise InvalidAdapterError(f"{path} has no {WEIGHTS_NAME}", code="weights_missing")
    config_bytes = _read_regular(path / CONFIG_NAME, MAX_CONFIG_BYTES, "config_invalid")
    weights = _read_regular(path / WEIGHTS_NAME, MAX_WEIGHTS_BYTES, "weights_invalid")
    return read_peft_bytes(config_bytes, weights)


def read_peft_bytes(config_bytes: bytes, weights_bytes: bytes) -> ParsedAdapter:
    """Validate an uploaded config + safetensors pair and build the adapter."""
    config = parse_config_bytes(bytes(config_bytes))
    settings = lora_settings(config)
    weights_bytes = bytes(weights_bytes)
    st = parse_safetensors(weights_bytes)
    inventory = classify_keys(st.tensors, settings)
    modules = _build_modules(inventory, settings)
    _check_embeddings(inventory, settings)
    check_finite(st.tensors)
    reason = not_mergeable_reason(inventory.reasons)
    adapter = LoraAdapter(
        base=BaseModelRef(
            model_id=config.get("base_model_name_or_path"), revision=config.get("revision")
        ),
        modules=modules,
        mergeable=reason is None,
        not_mergeable_reason=reason,
        extra_tensors=inventory.extras,
    )
    return ParsedAdapter(
        adapter, config, weights_bytes, _dominant(st.dtypes), architecture_of(config)
    )


def _dominant(dtypes: dict[str, str]) -> str:
    counts = Counter(dtypes.values())
    return max(sorted(counts), key=lambda d: counts[d]) if counts else "F32"


def _pair(module: str, slot: dict[str, tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    for have, missing in (("A", "B"), ("B", "A")):
        if missing not in slot:
            raise InvalidAdapterError(
                f"module {module!r} has lora_{have} but no lora_{missing}",
                code="lora_unpaired",
                module=module,
            )
    a, b = slot["A"][1], slot["B"][1]
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
        raise InvalidAdapterError(
            f"module {module!r}: lora_A{list(a.shape)} and lora_B{list(b.shape)} are not "
            "2-D factors of one rank",
            code="lora_shape_mismatch",
            module=module,
        )
    return a, b


def _check_rank(module: str, rank: int, settings: LoraSettings) -> None:
    expected = settings.rank_for(module)
    if rank != expected:
        raise InvalidAdapterError(
            f"module {module!r} has rank {rank} but the config (r / rank_pattern) says {expected}",
            code="lora_rank_mismatch",
            module=module,
        )


def _check_target(module: str, settings: LoraSettings) -> None:
    if not settings.targets(module):
        raise InvalidAdapterError(
            f"module {module!r} is not matched by target_modules {settings.target_modules!r}",
            code="target_modules_unmatched",
            module=module,
        )


def _build_modules(inv: KeyInventory, settings: LoraSettings) -> dict[str, LoraModule]:
    if not inv.factors and not inv.embeddings:
        raise InvalidAdapterError("adapter has no LoRA tensors", code="adapter_empty")
    modules: dict[str, LoraModule] = {}
    for module in sorted(inv.factors):
        a, b = _pair(module, inv.factors[module])
        if a.shape[0] == 0:
            raise InvalidAdapterError(f"module {module!r} has rank 0", code="lora_rank_zero")
        _check_rank(module, a.shape[0], settings)
        _check_target(module, settings)
        modules[module] = LoraModule(
            A=a, B=b, alpha=settings.alpha_for(module), use_rslora=settings.use_rslora
        )
    if not modules:
        raise InvalidAdapterError(
            "adapter has only embedding LoRA tensors; no linear LoRA modules to record",
            code="adapter_empty",
        )
    return modules


def _check_embeddings(inv: KeyInventory, settings: LoraSettings) -> None:
    """Embedding LoRA is kept as extra tensors, but it must still be well-formed."""
    for module in sorted(inv.embeddings):
        a, _ = _pair(module, inv.embeddings[module])
        _check_rank(module, a.shape[0], settings)
        _check_target(module, settings)


# ---------------------------------------------------------------- writing


def adapter_tensors(adapter: LoraAdapter) -> dict[str, np.ndarray]:
    """The PEFT key -> tensor map of ``adapter`` (factors plus recorded extra tensors)."""
    tensors: dict[str, np.ndarray] = dict(adapter.extra_tensors)
    for name, module in adapter.modules.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = _storable(module.A)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = _storable(module.B)
    return tensors


def _storable(array: np.ndarray) -> np.ndarray:
    # float64 (e.g. merge results) has no allowed wire dtype; F32 is the adapter convention.
    return array if array.dtype in (np.float16, np.float32) else array.astype(np.float32)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def refuse_export_destination(path: Path) -> None:
    """An export writes a new directory (or fills an empty one); anything else is refused
    by what it is."""
    if path.is_symlink():
        raise ConflictError(
            f"{path} is a symbolic link; export into a real directory", path=str(path)
        )
    if path.exists() and not path.is_dir():
        raise ConflictError(f"{path} is a file, not a directory to export into", path=str(path))
    if path.is_dir() and any(path.iterdir()):
        raise ConflictError(f"{path} already exists and is not empty", path=str(path))


def write_peft_dir(
    adapter: LoraAdapter,
    config: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    weights_bytes: bytes | None = None,
) -> None:
    """Write a PEFT directory atomically. ``weights_bytes`` (validated original bytes) are
    written verbatim; otherwise the weights are serialized from ``adapter``."""
    path = Path(path)
    refuse_export_destination(path)
    if weights_bytes is None:
        weights_bytes = serialize_safetensors(adapter_tensors(adapter))
    else:
        parse_safetensors(weights_bytes)  # never publish bytes we would refuse to read
    config_text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would otherwise become the published mode
        _write_synced(tmp / CONFIG_NAME, config_text.encode("utf-8"))
        _write_synced(tmp / WEIGHTS_NAME, bytes(weights_bytes))
        fsync_dir(tmp)
        refuse_export_destination(path)  # re-check just before publishing
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()  # an empty placeholder dir: rename() cannot replace it on all systems
        try:
            os.rename(tmp, path)
        except OSError as exc:  # someone else published there meanwhile
            raise ConflictError(f"{path} appeared while writing", path=str(path)) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)
