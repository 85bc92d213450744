"""SG-LoRA's conditional VAE (ALGORITHMS.md §2.2 step 3), one small network per module.

A flat vector of a whole LLM adapter is far too large for one MLP (§2.6), so every module gets
its own encoder/prior/decoder, all trained together as one batched model: weights carry a
leading group axis ``g`` and every layer is an ``einsum('gbi,gio->gbo')``. Module coordinate
vectors have different lengths; they are zero-padded to ``P`` and the padding is masked out of
the loss.

Per module, with ``x`` the expert's coordinates and ``c = (mu*, sigma*)`` its condition (both
divided by the module's scale):

- encoder ``q(z | x, c)``: 2-layer ReLU MLP on ``[x, c]`` -> mean and log-variance of ``z``;
- prior ``p(z | c)``: 2-layer ReLU MLP on ``c`` (a learned conditional prior, not N(0, I));
- decoder ``p(x | z, c)``: 3-layer ReLU MLP on ``[z, c]``, added to ``mu*``: the decoder learns a
  correction of the aggregated mean, so an untrained decoder reproduces the paper's
  softmax-weighted baseline instead of noise (our choice; the paper does not specify);
- loss ``E_q |x - x_hat|^2 + lambda * KL(q(z|x,c) || p(z|c))``, one reparameterized sample.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CvaeConfig:
    groups: int  # modules
    width: int  # P: padded coordinate length
    hidden: int = 64
    latent: int = 8
    kl_weight: float = 1.0  # lambda

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class GroupLinear(nn.Module):
    """``g`` independent linear layers applied to ``(g, batch, in)``."""

    def __init__(self, groups: int, d_in: int, d_out: int, *, zero: bool = False) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_in)
        w = torch.zeros(groups, d_in, d_out) if zero else torch.empty(groups, d_in, d_out)
        if not zero:
            nn.init.uniform_(w, -bound, bound)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(groups, 1, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("gbi,gio->gbo", x, self.weight) + self.bias


def _mlp(groups: int, sizes: list[int], *, zero_last: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        last = i == len(sizes) - 2
        layers.append(GroupLinear(groups, a, b, zero=zero_last and last))
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) summed over the last axis (>= 0)."""
    ratio = torch.exp(logvar_q - logvar_p)
    diff = (mu_q - mu_p) ** 2 * torch.exp(-logvar_p)
    return 0.5 * (ratio + diff - 1.0 - (logvar_q - logvar_p)).sum(-1)


class GroupCvae(nn.Module):
    """Tensors are ``(g, batch, P)``: x (coordinates), mu and sigma (the condition)."""

    def __init__(self, config: CvaeConfig) -> None:
        super().__init__()
        self.config = config
        g, p, h, z = config.groups, config.width, config.hidden, config.latent
        self.encoder = _mlp(g, [3 * p, h, 2 * z])
        self.prior = _mlp(g, [2 * p, h, 2 * z])
        self.decoder = _mlp(g, [z + 2 * p, h, h, p], zero_last=True)

    @staticmethod
    def _split(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = stats.chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def prior_params(self, mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._split(self.prior(torch.cat([mu, sigma], -1)))

    def decode(self, z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return mu + self.decoder(torch.cat([z, mu, sigma], -1))

    def loss(
        self,
        x: torch.Tensor,
        mu: torch.Tensor,
        sigma: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, reconstruction, KL), each a mean over groups and batch."""
        mu_q, logvar_q = self._split(self.encoder(torch.cat([x, mu, sigma], -1)))
        mu_p, logvar_p = self.prior_params(mu, sigma)
        eps = torch.randn(mu_q.shape, generator=generator, dtype=mu_q.dtype)
        z = mu_q + torch.exp(0.5 * logvar_q) * eps
        recon = (((self.decode(z, mu, sigma) - x) * mask) ** 2).sum(-1).mean()
        kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p).mean()
        return recon + self.config.kl_weight * kl, recon, kl

    @torch.no_grad()
    def sample(
        self,
        mu: torch.Tensor,
        sigma: torch.Tensor,
        samples: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """(samples, g, batch, P): decodes of ``z ~ p(z | c)``; ``samples = 0`` decodes the
        prior mean once (deterministic)."""
        mu_p, logvar_p = self.prior_params(mu, sigma)
        if samples == 0:
            return self.decode(mu_p, mu, sigma)[None]
        out = []
        for _ in range(samples):
            eps = torch.randn(mu_p.shape, generator=generator, dtype=mu_p.dtype)
            out.append(self.decode(mu_p + torch.exp(0.5 * logvar_p) * eps, mu, sigma))
        return torch.stack(out)
