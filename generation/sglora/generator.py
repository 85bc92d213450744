"""The SG-LoRA generator: expert library + semantic aggregator + per-module CVAE, as one artifact.

Training (``train_generator``), for n experts with description keys ``d_e``:

1. ``ExpertSpace.fit``: gauge-invariant coordinates ``mu_e`` of every expert's update (space.py).
2. Per-expert variance. The paper averages M epoch snapshots per expert and takes their
   element-wise variance; the zoo (like most public adapters) has only the final checkpoint.
   We model the snapshots' spread as isotropic noise at a relative level ``noise`` per module:
   ``sigma_e^2 = noise^2 * |mu_e,m|^2 / d_m`` on module m's coordinates (deviation, documented).
   The informative part of the condition's variance is the between-expert term of the law of
   total variance, which is computed from the experts themselves.
3. Training pairs: for every expert n and each of its description paraphrases as the query, the
   condition ``c = (mu*, sigma*)`` is aggregated from the top-k of the *other* experts (leave
   self out: with itself in the library the condition would be ``mu_n`` and the CVAE would learn
   the identity, i.e. the weighted-average baseline). Target: ``mu_n``.
4. The per-module CVAE (cvae.py) is trained on those pairs, full batch, seeded.

Generation: aggregate the top-k experts for the new description's embedding, sample the CVAE's
conditional prior ``samples`` times (seeded), decode, average, and map the coordinates back to
per-module weights over the experts (``ExpertSpace.expert_weights``); the caller realizes those
as a LoRA of the requested rank.

The artifact is one safetensors file (tensors + a JSON document in its metadata); no pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from generation.sglora.aggregate import Aggregate, aggregate, cosine
from generation.sglora.cvae import CvaeConfig, GroupCvae
from generation.sglora.space import ExpertSpace, ModuleBasis
from hub.core.errors import BadInputError, InvalidAdapterError
from hub.core.lora import LoraAdapter

ARTIFACT_KIND = "sg-lora-generator"
ARTIFACT_FORMAT = 1
META_KEY = "loradex.generator"

# progress(step, steps, loss) after each optimizer step; raising from it stops training.
TrainProgress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class GeneratorSettings:
    k: int = 4  # experts aggregated (the paper's K)
    tau: float = 0.05  # softmax temperature over cosine similarities
    noise: float = 0.1  # relative within-expert std (stands in for the M snapshots)
    max_dim: int = 64  # coordinates kept per module
    hidden: int = 64
    latent: int = 8
    kl_weight: float = 1.0  # the paper's lambda
    steps: int = 300
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExpertInfo:
    name: str
    version: int
    digest: str
    description: str


@dataclass(frozen=True)
class Generation:
    aggregate: Aggregate
    weights: dict[str, np.ndarray]  # module -> (n,) weights over the generator's experts
    coordinates: np.ndarray  # (D,) the generated flattened representation


@dataclass
class SgLoraGenerator:
    experts: list[ExpertInfo]
    keys: np.ndarray  # (n, E) description embeddings, unit rows
    space: ExpertSpace
    scales: np.ndarray  # (G,) per-module coordinate scale
    cvae: GroupCvae
    settings: GeneratorSettings
    base_model: str
    text_embedder_id: str
    report: dict[str, Any] = field(default_factory=dict)

    # -- statistics ----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.experts)

    def means(self) -> np.ndarray:
        """(n, D) the experts' flattened coordinates ``mu_e``."""
        return self.space.expert_vectors()

    def variances(self) -> np.ndarray:
        return expert_variances(self.space, self.settings.noise)

    def condition(self, query: np.ndarray, *, k: int, tau: float) -> Aggregate:
        if not 1 <= k <= self.size:
            raise BadInputError(
                f"k = {k} but the generator knows {self.size} experts (k must be 1..{self.size})",
                code="k_out_of_range",
            )
        sims = cosine(query, self.keys)
        return aggregate(sims, self.means(), self.variances(), k=k, tau=tau)

    # -- generation ----------------------------------------------------------------------------
    def generate(
        self, query: np.ndarray, *, k: int, tau: float, samples: int, seed: int
    ) -> Generation:
        """Sample ``samples`` adapters for the description embedded as ``query`` and average
        them (``samples = 0``: decode the prior mean, deterministic)."""
        if samples < 0:
            raise BadInputError(f"samples must be >= 0, got {samples}", code="samples_out_of_range")
        agg = self.condition(query, k=k, tau=tau)
        mu, sigma = self._padded([agg.mean], [agg.var])
        gen = torch.Generator().manual_seed(int(seed))
        self.cvae.eval()
        with one_thread():
            decoded = self.cvae.sample(mu, sigma, samples, gen).mean(0)  # (g, 1, P)
        flat = self._unpad(decoded[:, 0, :].double().numpy())
        return Generation(agg, self.space.expert_weights(flat), flat)

    # -- padding between the flat representation and (g, batch, P) tensors ----------------------
    def _padded(
        self, means: Sequence[np.ndarray], variances: Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_groups(self.space, self.scales, np.stack(means)), pad_groups(
            self.space, self.scales, np.sqrt(np.stack(variances))
        )

    def _unpad(self, padded: np.ndarray) -> np.ndarray:
        parts = []
        for g, basis in enumerate(self.space.bases):
            parts.append(padded[g, : basis.dim] * self.scales[g])
        return np.concatenate(parts)

    # -- artifact --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        tensors: dict[str, np.ndarray] = {"keys": self.keys.astype(np.float32)}
        tensors["scales"] = self.scales.astype(np.float64)
        for g, basis in enumerate(self.space.bases):
            tensors[f"coords.{g}"] = basis.coords
            tensors[f"lift.{g}"] = basis.lift
        for name, value in self.cvae.state_dict().items():
            tensors[f"cvae.{name}"] = value.detach().numpy()
        doc = {
            "kind": ARTIFACT_KIND,
            "format": ARTIFACT_FORMAT,
            "base_model": self.base_model,
            "text_embedder_id": self.text_embedder_id,
            "experts": [asdict(e) for e in self.experts],
            "modules": list(self.space.modules),
            "settings": self.settings.to_dict(),
            "cvae": self.cvae.config.to_dict(),
            "report": self.report,
        }
        blob = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        return bytes(save(blob, metadata={META_KEY: json.dumps(doc, sort_keys=True)}))

    @classmethod
    def from_bytes(cls, data: bytes) -> SgLoraGenerator:
        """Rebuild a generator from :meth:`to_bytes` output (the caller verifies its digest)."""
        from safetensors.numpy import load

        doc = read_artifact_doc(data)
        tensors = load(data)
        n_mod = len(doc["modules"])
        bases = tuple(
            ModuleBasis(tensors[f"coords.{g}"], tensors[f"lift.{g}"]) for g in range(n_mod)
        )
        cvae = GroupCvae(CvaeConfig(**doc["cvae"]))
        state = {
            k.removeprefix("cvae."): torch.from_numpy(v.copy())
            for k, v in tensors.items()
            if k.startswith("cvae.")
        }
        cvae.load_state_dict(state)
        cvae.eval()
        return cls(
            experts=[ExpertInfo(**e) for e in doc["experts"]],
            keys=tensors["keys"],
            space=ExpertSpace(tuple(doc["modules"]), bases),
            scales=tensors["scales"],
            cvae=cvae,
            settings=GeneratorSettings(**doc["settings"]),
            base_model=doc["base_model"],
            text_embedder_id=doc["text_embedder_id"],
            report=doc.get("report", {}),
        )


def read_artifact_doc(data: bytes) -> dict[str, Any]:
    """The JSON document in a generator artifact's safetensors metadata."""
    problem = "not a loradex SG-LoRA generator artifact"
    if len(data) < 8:
        raise BadInputError(problem, code="generator_invalid")
    n = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + n])
        doc = json.loads(header["__metadata__"][META_KEY])
    except (ValueError, KeyError, TypeError):
        raise BadInputError(problem, code="generator_invalid") from None
    if doc.get("kind") != ARTIFACT_KIND or doc.get("format") != ARTIFACT_FORMAT:
        raise BadInputError(f"{problem} (format {doc.get('format')})", code="generator_invalid")
    return dict(doc)


def version_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expert_variances(space: ExpertSpace, noise: float) -> np.ndarray:
    """(n, D): ``noise^2 * |mu_e,m|^2 / d_m`` on every coordinate of module m."""
    parts = []
    for basis in space.bases:
        per = (basis.coords**2).sum(1, keepdims=True) / max(basis.dim, 1)  # (n, 1)
        parts.append(np.repeat(noise**2 * per, basis.dim, axis=1))
    return np.concatenate(parts, axis=1)


def module_scales(space: ExpertSpace) -> np.ndarray:
    """(G,) RMS coordinate of each module over the experts (1 for an all-zero module)."""
    out = []
    for basis in space.bases:
        rms = float(np.sqrt((basis.coords**2).mean())) if basis.dim else 0.0
        out.append(rms if rms > 0 else 1.0)
    return np.asarray(out)


def pad_groups(space: ExpertSpace, scales: np.ndarray, flat: np.ndarray) -> torch.Tensor:
    """(batch, D) flattened rows -> (g, batch, P) scaled, zero-padded float32."""
    width = max((b.dim for b in space.bases), default=0)
    out = np.zeros((len(space.bases), flat.shape[0], max(width, 1)), np.float32)
    for g, (name, sl) in enumerate(space.layout.slices().items()):
        out[g, :, : sl.stop - sl.start] = flat[:, sl] / scales[g]
        del name
    return torch.from_numpy(out)


def group_mask(space: ExpertSpace) -> torch.Tensor:
    width = max((b.dim for b in space.bases), default=0)
    mask = torch.zeros(len(space.bases), 1, max(width, 1))
    for g, b in enumerate(space.bases):
        mask[g, :, : b.dim] = 1.0
    return mask


def training_pairs(
    keys: np.ndarray,
    queries: Sequence[np.ndarray],
    means: np.ndarray,
    variances: np.ndarray,
    *,
    k: int,
    tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(targets, cond means, cond variances), one row per (expert, query paraphrase); each
    condition is aggregated from the other experts only."""
    n = len(keys)
    xs, ms, vs = [], [], []
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        for q in np.atleast_2d(queries[i]):
            sims = cosine(q, keys[others])
            agg = aggregate(sims, means[others], variances[others], k=min(k, n - 1), tau=tau)
            xs.append(means[i])
            ms.append(agg.mean)
            vs.append(agg.var)
    return np.stack(xs), np.stack(ms), np.stack(vs)


def train_generator(
    experts: Sequence[LoraAdapter],
    infos: Sequence[ExpertInfo],
    keys: np.ndarray,
    queries: Sequence[np.ndarray],
    *,
    base_model: str,
    text_embedder_id: str,
    settings: GeneratorSettings | None = None,
    progress: TrainProgress | None = None,
) -> SgLoraGenerator:
    """Fit the expert space and train the CVAE (see the module docstring)."""
    settings = settings or GeneratorSettings()
    if len(experts) < 2:
        raise BadInputError(
            f"SG-LoRA needs at least 2 described experts to train, got {len(experts)}",
            code="too_few_experts",
        )
    start = time.perf_counter()
    space = ExpertSpace.fit(experts, max_dim=settings.max_dim)
    means = space.expert_vectors()
    variances = expert_variances(space, settings.noise)
    scales = module_scales(space)
    x, m, v = training_pairs(keys, queries, means, variances, k=settings.k, tau=settings.tau)
    cvae, losses = _fit_cvae(space, scales, x, m, v, settings, progress)
    report = {
        "pairs": int(len(x)),
        "experts": len(experts),
        "modules": len(space.modules),
        "dims": int(space.layout.size),
        "final_loss": losses[-1][0],
        "final_reconstruction": losses[-1][1],
        "final_kl": losses[-1][2],
        "seconds": round(time.perf_counter() - start, 3),
    }
    return SgLoraGenerator(
        experts=list(infos),
        keys=np.asarray(keys, np.float32),
        space=space,
        scales=scales,
        cvae=cvae,
        settings=settings,
        base_model=base_model,
        text_embedder_id=text_embedder_id,
        report=report,
    )


def _fit_cvae(
    space: ExpertSpace,
    scales: np.ndarray,
    x: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    s: GeneratorSettings,
    progress: TrainProgress | None,
) -> tuple[GroupCvae, list[tuple[float, float, float]]]:
    width = max((b.dim for b in space.bases), default=1) or 1
    config = CvaeConfig(len(space.bases), width, s.hidden, s.latent, s.kl_weight)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        cvae = GroupCvae(config)
    xt, mt, st = (pad_groups(space, scales, a) for a in (x, m, np.sqrt(v)))
    mask = group_mask(space)
    opt = torch.optim.AdamW(cvae.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(s.seed)
    losses: list[tuple[float, float, float]] = []
    cvae.train()
    with one_thread():
        for step in range(1, s.steps + 1):
            total, recon, kl = cvae.loss(xt, mt, st, mask, gen)
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append((total.item(), recon.item(), kl.item()))
            if progress is not None:
                progress(step, s.steps, losses[-1][0])
    cvae.eval()
    return cvae, losses


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The per-module networks are tiny: with more than one thread, synchronisation costs more
    than the arithmetic (30x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_experts(adapters: Sequence[LoraAdapter]) -> None:
    for a in adapters:
        if not a.mergeable:
            raise InvalidAdapterError(
                f"an expert is not a plain LoRA ({a.not_mergeable_reason})", code="not_mergeable"
            )
