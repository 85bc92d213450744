"""SG-LoRA's sparse semantic aggregator (ALGORITHMS.md §2.2, step 2).

For a new description embedding ``d*``: cosine similarity to every expert key ``d_e``, keep the
top K, weights ``alpha_k = softmax_k(sim_k / tau)``, then the condition of the generator:

    mu*      = sum_k alpha_k mu_k
    sigma*^2 = sum_k alpha_k sigma_k^2 + sum_k alpha_k (mu_k - mu*)^2     (law of total variance)

element-wise over the flattened expert representation. Ties in similarity are broken by the
lower expert index, so ``tau -> 0`` with a unique best match is exactly nearest-expert retrieval
and every run picks the same experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hub.core.errors import BadInputError


@dataclass(frozen=True)
class Aggregate:
    indices: np.ndarray  # (K,) expert indices, most similar first
    similarities: np.ndarray  # (K,) cosine similarities
    weights: np.ndarray  # (K,) softmax weights, sum to 1
    mean: np.ndarray  # (D,) mu*
    var: np.ndarray  # (D,) sigma*^2


def cosine(query: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(E,) cosine similarities of one query (dim,) to keys (E, dim); zero vectors give 0."""
    q = np.asarray(query, np.float64)
    k = np.asarray(keys, np.float64)
    qn = np.linalg.norm(q)
    kn = np.linalg.norm(k, axis=1)
    return (k @ q) / np.maximum(kn * qn, 1e-12)


def top_k(similarities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest similarities, descending, ties -> lower index first."""
    n = len(similarities)
    if not 1 <= k <= n:
        raise BadInputError(
            f"k must be between 1 and the number of experts ({n}), got {k}", code="k_out_of_range"
        )
    order = np.lexsort((np.arange(n), -np.asarray(similarities, np.float64)))
    return order[:k]


def softmax_weights(similarities: np.ndarray, tau: float) -> np.ndarray:
    """softmax(sim / tau), stable for tiny tau (the best entry gets weight ~1)."""
    if not tau > 0 or not np.isfinite(tau):
        raise BadInputError(f"tau must be a positive number, got {tau}", code="tau_out_of_range")
    s = np.asarray(similarities, np.float64) / tau
    e = np.exp(s - s.max())
    return e / e.sum()


def aggregate(
    similarities: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
    *,
    k: int,
    tau: float,
) -> Aggregate:
    """Top-k softmax aggregation of expert statistics ``means``/``variances`` (E, D)."""
    idx = top_k(similarities, k)
    sims = np.asarray(similarities, np.float64)[idx]
    w = softmax_weights(sims, tau)  # (K,)
    mu = np.asarray(means, np.float64)[idx]  # (K, D)
    var = np.asarray(variances, np.float64)[idx]  # (K, D)
    mean = w @ mu  # (D,)
    spread = mu - mean  # (K, D)
    total = w @ var + w @ (spread * spread)
    return Aggregate(idx, sims, w, mean, total)
