"""SG-LoRA's conditional VAE (ALGORITHMS.md §2.2 step 3), shared across coordinates.

A flat vector of a whole LLM adapter is far too large for one MLP and a library of tens of
experts far too small to train one (§2.6: tens of samples, thousands of dimensions: an MLP over
the whole vector memorizes its training pairs). So the networks read and write **one
coordinate at a time** and are shared by every coordinate of every module; each coordinate row
carries what distinguishes it:

- the condition of that coordinate: ``mu*_j`` and ``sigma*_j`` (scaled by the module's scale);
- where it sits: the log of its direction's eigenvalue relative to the module's largest (the
  leading direction is what all experts share; the tail is task-specific) and a learned
  embedding of its module;
- how relevant the aggregated experts are: the top similarity and the weighted similarity of
  the description to them (the same for every coordinate of one request).

Per row: encoder ``q(z | x, c)`` and learned prior ``p(z | c)`` are 2-layer ReLU MLPs giving a
diagonal Gaussian over a small latent ``z``; the decoder ``p(x | z, c)`` is a 3-layer ReLU MLP
whose output is added to ``mu*`` (zero-initialized last layer: an untrained decoder reproduces
the paper's softmax-weighted baseline; training learns how much of each coordinate to keep).
Loss: ``|x - x_hat|^2 + lambda * KL(q || p)`` per row, one reparameterized sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# Columns of a condition row (see ConditionRows): mu, sigma, log relative eigenvalue,
# top similarity, weighted similarity. The module id travels separately (an embedding index).
COND_FEATURES = 5


@dataclass(frozen=True)
class CvaeConfig:
    modules: int  # number of module embeddings
    hidden: int = 32
    latent: int = 2
    module_dim: int = 4
    kl_weight: float = 1.0  # the paper's lambda

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


@dataclass
class ConditionRows:
    """One row per (request, coordinate): ``features`` (N, COND_FEATURES) float32 and
    ``module`` (N,) int64."""

    features: torch.Tensor
    module: torch.Tensor

    def __getitem__(self, index: torch.Tensor) -> ConditionRows:
        return ConditionRows(self.features[index], self.module[index])

    @property
    def mu(self) -> torch.Tensor:
        return self.features[:, 0]


def _mlp(sizes: list[int], *, zero_last: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        linear = nn.Linear(a, b)
        if zero_last and i == len(sizes) - 2:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) summed over the last axis (>= 0)."""
    ratio = torch.exp(logvar_q - logvar_p)
    diff = (mu_q - mu_p) ** 2 * torch.exp(-logvar_p)
    return 0.5 * (ratio + diff - 1.0 - (logvar_q - logvar_p)).sum(-1)


class CoordinateCvae(nn.Module):
    def __init__(self, config: CvaeConfig) -> None:
        super().__init__()
        self.config = config
        c = COND_FEATURES + config.module_dim
        h, z = config.hidden, config.latent
        self.module_embedding = nn.Embedding(config.modules, config.module_dim)
        nn.init.zeros_(self.module_embedding.weight)
        self.encoder = _mlp([1 + c, h, 2 * z])
        self.prior = _mlp([c, h, 2 * z])
        self.decoder = _mlp([z + c, h, h, 1], zero_last=True)

    def _cond(self, rows: ConditionRows) -> torch.Tensor:
        return torch.cat([rows.features, self.module_embedding(rows.module)], -1)

    @staticmethod
    def _split(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = stats.chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def prior_params(self, rows: ConditionRows) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(self.prior(self._cond(rows)))

    def decode(self, z: torch.Tensor, rows: ConditionRows) -> torch.Tensor:
        """(N,) generated coordinates: ``mu*`` plus the decoder's correction."""
        return rows.mu + self.decoder(torch.cat([z, self._cond(rows)], -1))[:, 0]

    def loss(
        self, x: torch.Tensor, rows: ConditionRows, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, reconstruction, KL), each a mean over rows; ``x`` is (N,)."""
        cond = self._cond(rows)
        mu_q, logvar_q = self._split(self.encoder(torch.cat([x[:, None], cond], -1)))
        mu_p, logvar_p = self._split(self.prior(cond))
        eps = torch.randn(mu_q.shape, generator=generator, dtype=mu_q.dtype)
        z = mu_q + torch.exp(0.5 * logvar_q) * eps
        recon = ((self.decode(z, rows) - x) ** 2).mean()
        kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).mean()
        return recon + self.config.kl_weight * kl, recon, kl

    @torch.no_grad()
    def sample(self, rows: ConditionRows, samples: int, generator: torch.Generator) -> torch.Tensor:
        """(samples, N) decodes of ``z ~ p(z | c)``; ``samples = 0`` decodes the prior mean
        once (deterministic)."""
        mu_p, logvar_p = self.prior_params(rows)
        if samples == 0:
            return self.decode(mu_p, rows)[None]
        out = []
        for _ in range(samples):
            eps = torch.randn(mu_p.shape, generator=generator, dtype=mu_p.dtype)
            out.append(self.decode(mu_p + torch.exp(0.5 * logvar_p) * eps, rows))
        return torch.stack(out)
