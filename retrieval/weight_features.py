"""Rank- and gauge-invariant input features of a LoRA adapter, for the weight encoder.

Every feature depends on a module's update ``delta = s B A`` only, never on the factors, so it is
unchanged by rank permutations, by any gauge ``(B M, M^-1 A)`` and by zero-padding the rank. The
delta itself is never materialised (d_out x d_in): the QR trick gives its thin SVD from
``QR(B)`` (d_out x r), ``QR(A^T)`` (d_in x r) and the SVD of an r x r core.

Per slot (layer index, module leaf name such as ``q_proj``) the feature row holds:
- ``sv``: the top-``k`` singular values, zero-padded (ranks 4, 8, 16 all fit ``k = 16``);
- ``out``: ``||R^T delta||`` rows of fixed random output probes ``R`` (d_out x p), i.e.
  ``sqrt(diag(R^T delta delta^T R))``: how strongly the update writes along p fixed directions;
- ``in``: the same with input probes ``P`` (d_in x p): ``sqrt(diag(P^T delta^T delta P))``.
All of them are divided by the adapter's global delta norm (the norm itself, log-scaled, is a
separate scalar), so adapters trained with different alphas/ranks are comparable.
Slots the adapter does not have are zeros with ``mask = 0``. Probes are drawn from a seeded
generator per dimension, so features are reproducible across processes and machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from hub.core.errors import BadInputError
from hub.core.lora import LoraAdapter, LoraModule

try:  # BLAS threads on r x r / d x r problems only add overhead (7x slower on a busy 2-core box)
    from threadpoolctl import threadpool_limits as _limits
except ImportError:  # pragma: no cover - optional
    _limits = None

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class FeatureSpec:
    """What goes into a slot's feature row; part of the encoder artifact (and of its version)."""

    top_k: int = 16
    n_probes: int = 128
    probe_seed: int = 1234
    use_sv: bool = False
    use_out: bool = True
    use_in: bool = True

    @property
    def slot_dim(self) -> int:
        return self.top_k * self.use_sv + self.n_probes * self.use_out + self.n_probes * self.use_in

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SlotLayout:
    """The ordered slots an encoder expects: ``"12.q_proj"`` style keys."""

    slots: tuple[str, ...]

    @classmethod
    def from_adapters(cls, adapters: list[LoraAdapter]) -> SlotLayout:
        keys = {slot_key(name) for a in adapters for name in a.modules}
        return cls(tuple(sorted(keys, key=_slot_sort_key)))

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.slots)}

    def module_types(self) -> list[str]:
        return sorted({k.split(".", 1)[1] for k in self.slots})


def slot_key(module_name: str) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``"3.q_proj"``; no layer number -> ``-1``."""
    m = _LAYER_RE.search(module_name)
    layer = int(m.group(1)) if m else -1
    return f"{layer}.{module_name.rsplit('.', 1)[-1]}"


def _slot_sort_key(key: str) -> tuple[int, str]:
    layer, leaf = key.split(".", 1)
    return int(layer), leaf


@lru_cache(maxsize=64)
def _probes(dim: int, n: int, seed: int) -> np.ndarray:
    """Fixed unit-norm probe columns (dim, n) for a given dimension, same on every machine."""
    rng = np.random.default_rng([seed, dim, n])
    p = rng.standard_normal((dim, n))
    return p / np.linalg.norm(p, axis=0, keepdims=True)


def thin_svd(module: LoraModule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``delta = U diag(S) V^T`` with U (d_out, m), S (m,), V (d_in, m), m = min(r, d_out,
    d_in); no d x d matrix. A merge can have a rank above a module's width (a ``cat`` of 20
    adapters on a 192-wide v_proj): the thin SVD keeps the three factors consistent there."""
    B = module.B.astype(np.float64)  # (d_out, r)
    A = module.A.astype(np.float64)  # (r, d_in)
    qb, rb = np.linalg.qr(B)  # (d_out, r), (r, r)
    qa, ra = np.linalg.qr(A.T)  # (d_in, r), (r, r)
    core = module.scaling * (rb @ ra.T)  # (r, r): delta = qb core qa^T
    u, s, vt = np.linalg.svd(core, full_matrices=False)
    return qb @ u, s, qa @ vt.T  # (d_out, m), (m,), (d_in, m)


def _slot_row(module: LoraModule, spec: FeatureSpec) -> tuple[np.ndarray, float]:
    """Unnormalised feature row of one module and its squared Frobenius norm."""
    u, s, v = thin_svd(module)
    parts = []
    if spec.use_sv:
        sv = np.zeros(spec.top_k)
        n = min(spec.top_k, s.size)
        sv[:n] = s[:n]
        parts.append(sv)
    if spec.use_out:
        r_out = _probes(module.out_features, spec.n_probes, spec.probe_seed)
        # ||R^T delta||_row = ||(R^T U) diag(S)||_row because V has orthonormal columns
        parts.append(np.linalg.norm((r_out.T @ u) * s, axis=1))  # (p, r) -> (p,)
    if spec.use_in:
        p_in = _probes(module.in_features, spec.n_probes, spec.probe_seed + 1)
        parts.append(np.linalg.norm((p_in.T @ v) * s, axis=1))  # (p, r) -> (p,)
    return np.concatenate(parts), float(np.sum(s**2))


@dataclass(frozen=True)
class AdapterFeatures:
    """Features of one adapter in a layout: ``slots`` (n_slots, slot_dim), ``mask``
    (n_slots,) 1 where present, ``log_norm`` = log of the global delta norm."""

    slots: np.ndarray
    mask: np.ndarray
    log_norm: float

    def flat(self) -> np.ndarray:
        """One vector (n_slots * slot_dim + 1,) for linear baselines."""
        return np.concatenate([self.slots.ravel(), [self.log_norm]]).astype(np.float32)


def adapter_features(
    adapter: LoraAdapter, layout: SlotLayout, spec: FeatureSpec | None = None
) -> AdapterFeatures:
    """Features of ``adapter`` in ``layout``; modules outside the layout are ignored."""
    spec = spec or FeatureSpec()
    with _limits(1) if _limits else contextlib.nullcontext():
        return _features(adapter, layout, spec)


def _features(adapter: LoraAdapter, layout: SlotLayout, spec: FeatureSpec) -> AdapterFeatures:
    index = layout.index()
    slots = np.zeros((len(layout.slots), spec.slot_dim))
    mask = np.zeros(len(layout.slots), dtype=np.float32)
    total = 0.0
    for name, module in adapter.modules.items():
        i = index.get(slot_key(name))
        if i is None:
            continue
        row, energy = _slot_row(module, spec)
        slots[i] += row  # two modules mapping to one slot (rare) are summed, not dropped
        mask[i] = 1.0
        total += energy
    if total <= 0.0:
        raise BadInputError(
            "adapter shares no non-zero module with the encoder's layout "
            f"({len(layout.slots)} slots such as {list(layout.slots[:3])})",
            code="encoder_layout_mismatch",
        )
    norm = np.sqrt(total)
    return AdapterFeatures((slots / norm).astype(np.float32), mask, float(np.log(norm)))


def spec_digest(spec: FeatureSpec, layout: SlotLayout) -> str:
    blob = json.dumps({"spec": spec.to_dict(), "slots": layout.slots}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
