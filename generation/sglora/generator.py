"""The SG-LoRA generator: expert library + semantic aggregator + CVAE, as one artifact.

Training (``train_generator``), for n experts with description keys ``d_e``:

1. ``ExpertSpace.fit``: gauge-invariant coordinates ``mu_e`` of every expert's update (space.py).
2. Per-expert variances ``sigma_e^2`` (rows.py: the deviation from the paper's M snapshots).
3. Training pairs: each expert as the target of every one of its description paraphrases, with
   the condition aggregated from the other experts (rows.py).
4. The CVAE (cvae.py) is trained on one row per (pair, coordinate), in minibatches, seeded.

Generation: aggregate the top-k experts for the new description's embedding, sample the CVAE's
conditional prior ``samples`` times (seeded), decode, average, and map the coordinates back to
per-module weights over the experts (``ExpertSpace.expert_weights``); the caller realizes those
as a LoRA of the requested rank.

The artifact is one safetensors file (tensors + a JSON document in its metadata); no pickle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from generation.sglora.aggregate import Aggregate, aggregate, cosine
from generation.sglora.cvae import ConditionRows, CoordinateCvae, CvaeConfig
from generation.sglora.rows import (
    CoordinateLayout,
    condition_rows,
    expert_variances,
    training_pairs,
)
from generation.sglora.space import ExpertSpace, ModuleBasis
from hub.core.errors import BadInputError
from hub.core.lora import LoraAdapter
from hub.runtime.threads import torch_threads

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
    hidden: int = 32
    latent: int = 2
    kl_weight: float = 1.0  # the paper's lambda
    steps: int = 1000
    batch_rows: int = 4096
    lr: float = 3e-3
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
    keys: np.ndarray  # (n, E) description embeddings
    space: ExpertSpace
    cvae: CoordinateCvae
    settings: GeneratorSettings
    base_model: str
    text_embedder_id: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.experts)

    @property
    def layout(self) -> CoordinateLayout:
        return CoordinateLayout.of(self.space)

    def condition(self, query: np.ndarray, *, k: int, tau: float) -> Aggregate:
        if not 1 <= k <= self.size:
            raise BadInputError(
                f"k = {k} but the generator knows {self.size} experts (k must be 1..{self.size})",
                code="k_out_of_range",
            )
        means = self.space.expert_vectors()
        variances = expert_variances(self.space, self.settings.noise)
        return aggregate(cosine(query, self.keys), means, variances, k=k, tau=tau)

    def generate(
        self, query: np.ndarray, *, k: int, tau: float, samples: int, seed: int
    ) -> Generation:
        """Sample ``samples`` adapters for the description embedded as ``query`` and average
        them (``samples = 0``: decode the prior mean, deterministic)."""
        if samples < 0:
            raise BadInputError(f"samples must be >= 0, got {samples}", code="samples_out_of_range")
        agg = self.condition(query, k=k, tau=tau)
        layout = self.layout
        rows = condition_rows(layout, [agg])
        gen = torch.Generator().manual_seed(int(seed))
        self.cvae.eval()
        with torch_threads(1):  # tiny networks: sync costs more than the math
            decoded = self.cvae.sample(rows, samples, gen).mean(0)  # (D,)
        flat = decoded.double().numpy() * layout.scale
        return Generation(agg, self.space.expert_weights(flat), flat)

    # -- artifact --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        tensors: dict[str, np.ndarray] = {"keys": self.keys.astype(np.float32)}
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
        # fresh, aligned copies: views into the byte buffer may be misaligned, and numpy takes
        # other (differently rounding) loops for misaligned data
        tensors = {k: np.array(v, order="C", copy=True) for k, v in load(data).items()}
        n_mod = len(doc["modules"])
        bases = tuple(
            ModuleBasis(tensors[f"coords.{g}"], tensors[f"lift.{g}"]) for g in range(n_mod)
        )
        cvae = CoordinateCvae(CvaeConfig(**doc["cvae"]))
        state = {
            k.removeprefix("cvae."): torch.tensor(v)
            for k, v in tensors.items()
            if k.startswith("cvae.")
        }
        cvae.load_state_dict(state)
        cvae.eval()
        return cls(
            experts=[ExpertInfo(**e) for e in doc["experts"]],
            keys=tensors["keys"],
            space=ExpertSpace(tuple(doc["modules"]), bases),
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
    space = ExpertSpace.fit(experts, max_dim=settings.max_dim)
    means = space.expert_vectors()
    variances = expert_variances(space, settings.noise)
    targets, conditions = training_pairs(
        keys, queries, means, variances, k=settings.k, tau=settings.tau
    )
    layout = CoordinateLayout.of(space)
    rows = condition_rows(layout, conditions)
    x = torch.tensor((means[targets] / layout.scale).reshape(-1), dtype=torch.float32)
    cvae, losses = _fit_cvae(len(space.modules), x, rows, settings, progress)
    report = {
        "pairs": len(targets),
        "experts": len(experts),
        "modules": len(space.modules),
        "dims": int(space.layout.size),
        "final_loss": losses[-1][0],
        "final_reconstruction": losses[-1][1],
        "final_kl": losses[-1][2],
    }
    return SgLoraGenerator(
        experts=list(infos),
        keys=np.asarray(keys, np.float32),
        space=space,
        cvae=cvae,
        settings=settings,
        base_model=base_model,
        text_embedder_id=text_embedder_id,
        report=report,
    )


def _fit_cvae(
    modules: int,
    x: torch.Tensor,
    rows: ConditionRows,
    s: GeneratorSettings,
    progress: TrainProgress | None,
) -> tuple[CoordinateCvae, list[tuple[float, float, float]]]:
    config = CvaeConfig(modules, s.hidden, s.latent, kl_weight=s.kl_weight)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        cvae = CoordinateCvae(config)
    opt = torch.optim.AdamW(cvae.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(s.seed)
    losses: list[tuple[float, float, float]] = []
    cvae.train()
    with torch_threads(1):  # tiny networks: sync costs more than the math
        for step in range(1, s.steps + 1):
            batch = torch.randint(0, len(x), (min(s.batch_rows, len(x)),), generator=gen)
            total, recon, kl = cvae.loss(x[batch], rows[batch], gen)
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append((total.item(), recon.item(), kl.item()))
            if progress is not None:
                progress(step, s.steps, losses[-1][0])
    cvae.eval()
    return cvae, losses
