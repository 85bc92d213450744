"""SG-LoRA: adapter parameters for an unseen task from its description (ALGORITHMS.md §2).

- ``aggregate``: top-k softmax aggregation of expert statistics over description similarity;
- ``space``: gauge-invariant per-module coordinates of the experts' updates;
- ``cvae``: the per-module conditional VAE with a learned conditional prior;
- ``generator``: training, generation and the safetensors artifact.

Text embeddings come from the caller (``hub.services`` owns the embedder); the generator returns
per-module weights over its experts, which the caller realizes as a LoRA of a chosen rank.
"""

from generation.sglora.aggregate import Aggregate, aggregate, cosine, softmax_weights, top_k
from generation.sglora.generator import (
    ExpertInfo,
    Generation,
    GeneratorSettings,
    SgLoraGenerator,
    read_artifact_doc,
    train_generator,
    version_of,
)
from generation.sglora.space import ExpertSpace, FlatLayout

__all__ = [
    "Aggregate",
    "ExpertInfo",
    "ExpertSpace",
    "FlatLayout",
    "Generation",
    "GeneratorSettings",
    "SgLoraGenerator",
    "aggregate",
    "cosine",
    "read_artifact_doc",
    "softmax_weights",
    "top_k",
    "train_generator",
    "version_of",
]
