"""Weight encoder (AutoLoRA-style retriever): adapter weights -> the text-embedding space.

Pipeline: :func:`adapter_features` (rank/gauge invariant, see weight_features.py) -> flat vector
-> standardise with the training set's mean/std (stored buffers) -> dropout -> small MLP ->
L2-normalised 384-d vector. Trained with a symmetric InfoNCE loss on (adapter, description)
pairs; each step draws one paraphrase per adapter (paraphrases are extra positives across steps)
and every adapter appears once per batch, so there are no false negatives from duplicates
(the pitfall of ALGORITHMS.md §1.10).

The artifact is a directory with ``encoder.safetensors`` (weights) and ``encoder.json`` (config:
feature spec, slot layout, dims, text embedder id, training settings and ``version`` = sha256 of
config + weights). No pickle anywhere. :class:`LeastSquaresMap` is the linear baseline.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hub.core.errors import BadInputError, ConflictError
from hub.core.lora import LoraAdapter
from retrieval.encoder_files import CONFIG_FILE, WEIGHTS_FILE
from retrieval.weight_features import (
    FeatureSpec,
    SlotLayout,
    adapter_features,
    spec_digest,
)

ARTIFACT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    lr: float = 2e-3
    weight_decay: float = 1e-2
    temperature: float = 0.07  # fixed: 49 adapters are too few to learn it stably
    hidden: int = 0  # 0 = a single linear layer (best held-out recall on the zoo)
    dropout: float = 0.3
    batch_size: int = 64
    max_basis: int = 256  # principal directions kept from the training features
    seed: int = 0


@dataclass
class EncoderConfig:
    spec: FeatureSpec
    layout: SlotLayout
    text_embedder_id: str
    out_dim: int
    train: TrainConfig = field(default_factory=TrainConfig)
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ARTIFACT_FORMAT,
            "spec": self.spec.to_dict(),
            "slots": list(self.layout.slots),
            "text_embedder_id": self.text_embedder_id,
            "out_dim": self.out_dim,
            "train": asdict(self.train),
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        return cls(
            spec=FeatureSpec(**d["spec"]),
            layout=SlotLayout(tuple(d["slots"])),
            text_embedder_id=d["text_embedder_id"],
            out_dim=int(d["out_dim"]),
            train=TrainConfig(**d["train"]),
            version=d.get("version", ""),
        )


class _Net(nn.Module):
    """(n, F) standardised features -> (n, out_dim) unit vectors."""

    # registered buffers (declared for type checkers, which see Module.__getattr__ otherwise)
    mean: torch.Tensor
    std: torch.Tensor
    basis: torch.Tensor

    def __init__(self, in_dim: int, out_dim: int, hidden: int, dropout: float, m: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.register_buffer("basis", torch.zeros(in_dim, m))
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(m, hidden), nn.GELU(), nn.Linear(hidden, out_dim)]
        else:
            layers += [nn.Linear(m, out_dim)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std  # (n, F)
        u = z @ self.basis  # (n, F) @ (F, m): coordinates in the training span
        return nn.functional.normalize(self.body(u), dim=-1)  # (n, out_dim)

    def fit_basis(self, z: torch.Tensor) -> None:
        """Principal directions of the standardised training features (m <= n_train). A linear
        map trained by gradient descent only learns within this span anyway; projecting first
        makes training O(m) instead of O(F) (F ~ 15k) per output."""
        _, s, vt = torch.linalg.svd(z, full_matrices=False)  # vt: (min(n, F), F)
        m = self.basis.shape[1]
        scale = s[:m].mean().clamp(min=1e-6)
        self.basis.zero_()
        self.basis[:, : min(m, len(vt))] = vt[:m].T / scale  # unit-ish coordinates


def info_nce(w: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: w, t (n, d) unit rows, row i of each is a positive pair."""
    logits = w @ t.T / temperature  # (n, n)
    target = torch.arange(len(w))
    ce = nn.functional.cross_entropy
    return 0.5 * (ce(logits, target) + ce(logits.T, target))


class WeightEncoder:
    """A trained encoder: ``embed(adapter) -> (out_dim,)`` unit float32 vector."""

    def __init__(self, config: EncoderConfig, net: _Net) -> None:
        self.config = config
        self.net = net.eval()

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def embedder_id(self) -> str:
        """What a weight index records: retraining changes it, so old indexes are refused."""
        return f"weights/{self.version}/{self.config.out_dim}"

    def features(self, adapter: LoraAdapter) -> np.ndarray:
        return adapter_features(adapter, self.config.layout, self.config.spec).flat()

    def embed(self, adapter: LoraAdapter) -> np.ndarray:
        return self.embed_features(self.features(adapter)[None])[0]

    def embed_many(self, adapters: Sequence[LoraAdapter]) -> np.ndarray:
        return self.embed_features(np.stack([self.features(a) for a in adapters]))

    def embed_features(self, feats: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.net(torch.from_numpy(np.asarray(feats, np.float32))).numpy()

    # -- weight space itself, for `similar` -------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return int(self.net.basis.shape[1])

    @property
    def feature_id(self) -> str:
        """What a feature index records (tied to this encoder's statistics and basis)."""
        return f"features/{self.version}/{self.feature_dim}"

    def feature_vectors(self, adapters: Sequence[LoraAdapter]) -> np.ndarray:
        """(n, m) unit vectors of the adapters' standardised weight features in the training
        set's principal span: nearest neighbours here are nearest in raw feature space (exactly
        for training adapters, which lie in the span). On the zoo, raw features group same-family
        adapters better than the text-aligned embedding (benchmarks/retrieval.py, `similar`)."""
        feats = np.stack([self.features(a) for a in adapters])
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(feats, np.float32))
            u = ((x - self.net.mean) / self.net.std) @ self.net.basis  # (n, F) @ (F, m)
            return nn.functional.normalize(u, dim=-1).numpy()

    # -- artifact
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        # temp names + rename, config last: a reader never sees new weights with an old config
        # that it would accept (the version hash ties the two together anyway)
        tmp_w, tmp_c = directory / f".{WEIGHTS_FILE}.tmp", directory / f".{CONFIG_FILE}.tmp"
        save_file(tensors, str(tmp_w), metadata={"version": self.version})
        tmp_c.write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True))
        os.replace(tmp_w, directory / WEIGHTS_FILE)
        os.replace(tmp_c, directory / CONFIG_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> WeightEncoder:
        directory = Path(directory)
        try:
            config = EncoderConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
            state = load_file(str(directory / WEIGHTS_FILE))
            net = _build_net(config, int(state["mean"].shape[0]), int(state["basis"].shape[1]))
            net.load_state_dict(state)
        # SafetensorError: a truncated or garbled weights file; RuntimeError: tensors that do
        # not fit the config (load_state_dict's shape check)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            # derived data gone bad, like a stale index: a conflict (exit 1 / HTTP 409) that
            # `encoder train` resolves, not an internal failure
            raise ConflictError(
                f"weight encoder artifact {directory} is missing or unreadable ({exc}); "
                "run `loradex encoder train`",
                code="encoder_unavailable",
            ) from exc
        if _version(config, net) != config.version:
            raise ConflictError(
                f"weight encoder artifact {directory} fails its content hash; "
                "run `loradex encoder train`",
                code="encoder_corrupted",
            )
        return cls(config, net)


def _build_net(config: EncoderConfig, in_dim: int, m: int) -> _Net:
    return _Net(in_dim, config.out_dim, config.train.hidden, config.train.dropout, m)


def _version(config: EncoderConfig, net: _Net) -> str:
    """sha256 over the config (minus version) and every tensor's bytes, in key order."""
    h = hashlib.sha256()
    cfg = config.to_dict()
    cfg.pop("version")
    h.update(json.dumps(cfg, sort_keys=True).encode())
    h.update(spec_digest(config.spec, config.layout).encode())
    for key, value in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_encoder(
    adapters: Sequence[LoraAdapter],
    text_embeddings: Sequence[np.ndarray],
    text_embedder_id: str,
    spec: FeatureSpec | None = None,
    config: TrainConfig | None = None,
    layout: SlotLayout | None = None,
) -> tuple[WeightEncoder, list[float]]:
    """Train on adapters with descriptions. ``text_embeddings[i]`` is (n_i, d) unit rows: the
    embeddings of adapter i's paraphrased descriptions. Returns the encoder and the loss curve."""
    if len(adapters) < 2 or len(adapters) != len(text_embeddings):
        raise BadInputError(
            "training needs >= 2 described adapters and one text set per adapter",
            code="encoder_too_few",
        )
    spec, config = spec or FeatureSpec(), config or TrainConfig()
    layout = layout or SlotLayout.from_adapters(list(adapters))
    feats = np.stack([adapter_features(a, layout, spec).flat() for a in adapters])  # (n, F)
    texts = [
        torch.from_numpy(np.asarray(t, np.float32).reshape(-1, t.shape[-1]))
        for t in text_embeddings
    ]
    out_dim = int(texts[0].shape[1])
    enc_cfg = EncoderConfig(spec, layout, text_embedder_id, out_dim, config)
    torch.manual_seed(config.seed)
    net = _build_net(enc_cfg, feats.shape[1], min(len(feats), config.max_basis))
    x = torch.from_numpy(feats)
    net.mean.copy_(x.mean(0))
    net.std.copy_(x.std(0, unbiased=False).clamp(min=1e-6))
    net.fit_basis((x - net.mean) / net.std)
    losses = _fit(net, x, texts, config)
    net.eval()
    enc_cfg.version = _version(enc_cfg, net)
    return WeightEncoder(enc_cfg, net), losses


def _fit(net: _Net, x: torch.Tensor, texts: list[torch.Tensor], cfg: TrainConfig) -> list[float]:
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _AdamW(list(net.parameters()), cfg.lr, cfg.weight_decay)
    n, losses = len(x), []
    net.train()
    for step in range(cfg.steps):
        batch = torch.randperm(n, generator=gen)[: cfg.batch_size]  # unique adapters
        pick = [int(torch.randint(len(texts[i]), (1,), generator=gen)) for i in batch]
        t = torch.stack([texts[i][j] for i, j in zip(batch.tolist(), pick, strict=True)])
        loss = info_nce(net(x[batch]), t, cfg.temperature)
        net.zero_grad()
        loss.backward()
        opt.step(0.5 * (1 + math.cos(math.pi * step / cfg.steps)))  # cosine decay
        losses.append(float(loss.detach()))
    return losses


class _AdamW:
    """Plain AdamW (Loshchilov & Hutter). Hand-written because ``torch.optim`` imports
    torch._dynamo on first use, ~9 s on a busy 2-core box, longer than the training itself."""

    def __init__(self, params: list[nn.Parameter], lr: float, wd: float) -> None:
        self.params, self.lr, self.wd, self.t = params, lr, wd, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, lr_factor: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.t += 1
        lr = self.lr * lr_factor
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            p.mul_(1 - lr * self.wd)
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**self.t))


class LeastSquaresMap:
    """Baseline: standardised features -> text space by ridge-regularised least squares
    (dual form, since features outnumber adapters): ``W = Z^T (Z Z^T + lam I)^-1 Y``."""

    def __init__(self, lam: float = 1.0) -> None:
        self.lam = lam

    def fit(self, feats: np.ndarray, targets: np.ndarray) -> LeastSquaresMap:
        x = np.asarray(feats, np.float64)  # (n, F)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        z = (x - self.mean) / self.std
        gram = z @ z.T + self.lam * np.eye(len(z))  # (n, n)
        self.w = z.T @ np.linalg.solve(gram, np.asarray(targets, np.float64))  # (F, d)
        return self

    def transform(self, feats: np.ndarray) -> np.ndarray:
        y = ((np.asarray(feats, np.float64) - self.mean) / self.std) @ self.w
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)
