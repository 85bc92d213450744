"""GGUF -> fp32 HF model, converted once and cached as safetensors.

The first load dequantizes the GGUF with transformers (~15 s for SmolLM2), rebuilds a plain model
from its config (without the GGUF ``quantization_config``, which would otherwise follow the model
into every save and reload) and saves it with the tokenizer under ``cache_dir/<name>/``. Later
loads read that directory (<2 s). The cache is written to a temp dir and renamed in, under a file
lock, so a crash or a concurrent process never leaves a half-written cache behind.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from generation.base_models.spec import BaseModelSpec
from generation.device import resolve_device
from hub.core.errors import StorageError
from hub.runtime.files import atomic_write, sha256_file

MARKER = "loradex_base.json"


@dataclass
class LoadedBase:
    """A base model ready to evaluate or train: eval mode, fp32, on ``device``."""

    spec: BaseModelSpec
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers tokenizer
    fingerprint: str  # sha256 of the GGUF file
    config: dict[str, Any]
    device: torch.device
    cache_path: Path

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class PrepareInfo:
    name: str
    fingerprint: str
    cache_path: Path
    parameters: int
    seconds: float
    converted: bool  # False when the cache was already there


def fingerprint(spec: BaseModelSpec, cache_dir: Path) -> tuple[Path, str]:
    """(GGUF path, its sha256). The hash is cached beside the models, keyed on the file's path,
    size and mtime, so it is computed once per file version."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    gguf = spec.locate_gguf(cache_dir)
    stat = gguf.stat()
    key = {"path": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    record = cache_dir / f"{spec.name}.sha256.json"
    try:
        cached = json.loads(record.read_text())
        if {k: cached.get(k) for k in key} == key:
            return gguf, str(cached["sha256"])
    except (OSError, ValueError, KeyError):
        pass  # no or unreadable record: hash again
    digest = sha256_file(gguf)
    if spec.expected_sha256 and digest != spec.expected_sha256:
        raise StorageError(
            f"{gguf} has sha256 {digest}, expected {spec.expected_sha256}; reinstall it with: "
            f"{spec.install_hint}",
            code="base_model_checksum",
        )
    atomic_write(record, json.dumps({**key, "sha256": digest}, indent=1).encode())
    return gguf, digest


def _cache_is_current(path: Path, digest: str) -> bool:
    try:
        return json.loads((path / MARKER).read_text()).get("fingerprint") == digest
    except (OSError, ValueError):
        return False


def _convert(spec: BaseModelSpec, gguf: Path, dest: Path, digest: str) -> int:
    """Dequantize ``gguf`` and atomically write the fp32 safetensors cache at ``dest``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config._name_or_path = spec.hf_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    parameters = sum(p.numel() for p in model.parameters())
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared by users
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        marker = {"name": spec.name, "hf_id": spec.hf_id, "fingerprint": digest}
        (tmp / MARKER).write_text(json.dumps({**marker, "parameters": parameters}, indent=1))
        if dest.exists():  # stale cache for another GGUF version
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return parameters


def prepare(spec: BaseModelSpec, cache_dir: Path) -> PrepareInfo:
    """Make sure the converted cache exists and matches the GGUF; convert when needed."""
    start = time.perf_counter()
    cache_dir = Path(cache_dir)
    gguf, digest = fingerprint(spec, cache_dir)
    dest = cache_dir / spec.name
    converted = False
    with FileLock(str(cache_dir / f"{spec.name}.lock")):
        if not _cache_is_current(dest, digest):
            _convert(spec, gguf, dest, digest)
            converted = True
    parameters = int(json.loads((dest / MARKER).read_text())["parameters"])
    return PrepareInfo(spec.name, digest, dest, parameters, time.perf_counter() - start, converted)


def load(spec: BaseModelSpec, cache_dir: Path, device: str = "auto") -> LoadedBase:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = prepare(spec, cache_dir)
    target = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(info.cache_path, dtype=torch.float32)
    model.to(target).eval()  # type: ignore[arg-type]  # transformers' stub of .to is too narrow
    tokenizer = AutoTokenizer.from_pretrained(info.cache_path)
    return LoadedBase(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        fingerprint=info.fingerprint,
        config=model.config.to_dict(),
        device=target,
        cache_path=info.cache_path,
    )
