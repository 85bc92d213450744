"""Singular-value spectra of an adapter's updates, per module, cached by weights digest.

For a module ``delta = s * B @ A`` with ``A: (r, d_in)`` and ``B: (d_out, r)`` the spectrum is
computed without the ``d_out x d_in`` matrix (ALGORITHMS.md, the QR trick):

    B   = Qb Rb          Qb: (d_out, r) orthonormal columns, Rb: (r, r)
    A^T = Qa Ra          Qa: (d_in, r),                      Ra: (r, r)
    delta = Qb (s Rb Ra^T) Qa^T   ->   sigma(delta) = sigma(s Rb Ra^T), an r x r SVD.

A version's weights never change (content-addressed), so results are cached per digest: in
memory (a small LRU) and as JSON under the cache directory (derived data: safe to delete).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.lora import LoraModule
from hub.core.names import AdapterRef
from hub.runtime.files import atomic_write
from hub.services.registry import RegistryService

CACHE_FORMAT = 1  # bump when the cached JSON changes meaning
MEMORY_ENTRIES = 64
# "model.layers.12.self_attn.q_proj" -> layer 12, kind "self_attn.q_proj"
_LAYERED = re.compile(r"^(?:.*\.)?(?:layers|h|blocks|layer)\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class ModuleSpectrum:
    name: str
    rank: int
    singular_values: tuple[float, ...]  # descending, one per rank

    @property
    def layer(self) -> int | None:
        match = _LAYERED.match(self.name)
        return int(match.group(1)) if match else None

    @property
    def kind(self) -> str:
        """The module's role without its layer number (``self_attn.q_proj``)."""
        match = _LAYERED.match(self.name)
        return match.group(2) if match else self.name.rsplit(".", 1)[-1]

    @property
    def frobenius(self) -> float:
        return math.sqrt(sum(s * s for s in self.singular_values))

    @property
    def effective_rank(self) -> float:
        """exp(entropy) of the normalized spectrum (Roy & Vetterli, 2007): 1 when one
        direction carries everything, ``rank`` when all are equal."""
        total = sum(self.singular_values)
        if total <= 0:
            return 0.0
        probs = [s / total for s in self.singular_values if s > 0]
        return math.exp(-sum(p * math.log(p) for p in probs))


@dataclass(frozen=True)
class AdapterSpectra:
    digest: str
    modules: tuple[ModuleSpectrum, ...]

    def by_kind(self) -> dict[str, list[ModuleSpectrum]]:
        """Module kind -> its modules in layer order (what a per-layer plot needs)."""
        groups: dict[str, list[ModuleSpectrum]] = {}
        for m in self.modules:
            groups.setdefault(m.kind, []).append(m)
        for mods in groups.values():
            mods.sort(key=lambda m: (m.layer is None, m.layer or 0, m.name))
        return dict(sorted(groups.items()))


def module_spectrum(module: LoraModule) -> np.ndarray:
    """Singular values of ``s * B @ A``, descending, in float64: (r,)."""
    _, rb = np.linalg.qr(module.B.astype(np.float64))  # (d_out, r) -> Rb (r, r)
    _, ra = np.linalg.qr(module.A.astype(np.float64).T)  # (d_in, r) -> Ra (r, r)
    core = module.scaling * (rb @ ra.T)  # (r, r)
    return np.asarray(np.linalg.svd(core, compute_uv=False), dtype=np.float64)


class SpectraService:
    def __init__(self, registry: RegistryService, cache_dir: Path | None) -> None:
        self.registry = registry
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: OrderedDict[str, AdapterSpectra] = OrderedDict()
        self._lock = threading.Lock()

    def for_version(self, ref: AdapterRef) -> AdapterSpectra:
        digest = self.registry.show(ref).digest
        cached = self._remembered(digest) or self._read_disk(digest)
        if cached is None:
            adapter = self.registry.load(ref).adapter  # digest-verified, re-validated
            cached = AdapterSpectra(
                digest,
                tuple(
                    ModuleSpectrum(name, m.rank, tuple(float(s) for s in module_spectrum(m)))
                    for name, m in adapter
                ),
            )
            self._write_disk(cached)
        self._remember(cached)
        return cached

    # -- caches ---------------------------------------------------------------------------------
    def _remembered(self, digest: str) -> AdapterSpectra | None:
        with self._lock:
            hit = self._memory.get(digest)
            if hit is not None:
                self._memory.move_to_end(digest)
            return hit

    def _remember(self, spectra: AdapterSpectra) -> None:
        with self._lock:
            self._memory[spectra.digest] = spectra
            self._memory.move_to_end(spectra.digest)
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def _path(self, digest: str) -> Path | None:
        if self.cache_dir is None or not re.fullmatch(r"[0-9a-f]{64}", digest):
            return None
        return self.cache_dir / f"{digest}.json"

    def _read_disk(self, digest: str) -> AdapterSpectra | None:
        path = self._path(digest)
        if path is None or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != CACHE_FORMAT or doc.get("digest") != digest:
                return None
            return AdapterSpectra(digest, tuple(_module_from(m) for m in doc["modules"]))
        except (ValueError, KeyError, TypeError):
            return None  # a damaged cache entry is recomputed (and overwritten)

    def _write_disk(self, spectra: AdapterSpectra) -> None:
        path = self._path(spectra.digest)
        if path is None:
            return
        doc = {
            "format": CACHE_FORMAT,
            "digest": spectra.digest,
            "modules": [
                {"name": m.name, "rank": m.rank, "singular_values": list(m.singular_values)}
                for m in spectra.modules
            ],
        }
        # temp file + rename: a reader never sees half a file; concurrent writers agree anyway.
        with contextlib.suppress(OSError):  # a read-only cache dir only costs recomputation
            atomic_write(path, json.dumps(doc).encode())


def _module_from(doc: dict[str, Any]) -> ModuleSpectrum:
    values = tuple(float(v) for v in doc["singular_values"])
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError("bad cached spectrum")
    return ModuleSpectrum(str(doc["name"]), int(doc["rank"]), values)
