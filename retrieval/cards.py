"""Adapter cards: what the text index embeds for an adapter, and its hash.

A card is the adapter's name, description, tags and (when known) a few task examples. It is not
embedded as one string: MiniLM's mean pooling lets a long card drift toward its most generic
words, and on the zoo a single "description. name. tags. examples" string is the weakest
rendering we measured. Instead each *field* is embedded on its own and the card vector is the
normalised weighted sum of the field vectors ("late fusion" of fields, one vector per card, so
the index stays one-row-per-adapter):

- ``description``: the description as written;
- ``name``: the name as words (``reverse_word`` -> "reverse word", ``camelCase`` -> "camel case"),
  a strong keyword signal in real catalogs where names are often the only curated text;
- ``context``: tags and task examples, used only when there is no description (measured on the
  zoo: with a description they dilute it; without one they are most of the signal).

``card_hash`` covers the rendered fields, their weights and the embedder id, so a card whose
text did not change is never re-embedded, and any change (text, weights, model) is.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from hub.core.errors import BadInputError

CARD_FORMAT = 2
MAX_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 120


class _Embedder(Protocol):
    embedder_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class CardWeights:
    """Weight of each field in the card vector (part of the hash)."""

    description: float = 1.0
    name: float = 1.0
    context: float = 0.6


@dataclass(frozen=True)
class Card:
    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    examples: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise BadInputError("card needs a name", code="card_empty")

    @classmethod
    def of(
        cls,
        name: str,
        description: str | None = None,
        tags: Iterable[str] = (),
        examples: Iterable[Any] = (),
    ) -> Card:
        """Build from loose values; ``examples`` are ``{"input", "output"}`` dicts or pairs.
        Malformed examples are skipped (they come from free-form version metadata)."""
        return cls(
            name=name,
            description=(description or "").strip(),
            tags=tuple(t.strip() for t in tags if isinstance(t, str) and t.strip()),
            examples=tuple(_examples(examples)),
        )

    def fields(self) -> dict[str, str]:
        """The texts embedded, by field; empty fields are left out."""
        out = {"name": name_words(self.name)}
        if self.description:
            out["description"] = self.description
        else:
            context = []
            if self.tags:
                context.append("Tags: " + ", ".join(self.tags) + ".")
            context += [f"Example: {i} -> {o}" for i, o in self.examples]
            if context:
                out["context"] = " ".join(context)
        return out

    def text(self) -> str:
        """One readable string of the card (display, logs)."""
        return "\n".join(f"{k}: {v}" for k, v in sorted(self.fields().items()))


def name_words(name: str) -> str:
    """``reverse_word`` / ``reverse-word`` / ``reverseWord`` / ``org/reverse.v2`` as words."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return re.sub(r"[\s_\-/.@:]+", " ", spaced).strip().lower() or name


def _examples(raw: Iterable[Any]) -> Iterable[tuple[str, str]]:
    count = 0
    for ex in raw:
        if count == MAX_EXAMPLES:
            return
        if isinstance(ex, Mapping):
            inp, out = ex.get("input"), ex.get("output")
        elif isinstance(ex, Sequence) and not isinstance(ex, str) and len(ex) == 2:
            inp, out = ex[0], ex[1]
        else:
            continue
        if isinstance(inp, str) and isinstance(out, str):
            count += 1
            yield inp[:MAX_EXAMPLE_CHARS], out[:MAX_EXAMPLE_CHARS]


@dataclass(frozen=True)
class CardEmbedder:
    """Cards -> unit vectors with a text embedder; ``embedder_id`` names model + card recipe."""

    embedder: _Embedder
    weights: CardWeights = field(default_factory=CardWeights)

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def embedder_id(self) -> str:
        """Model id plus the card recipe: changing either makes old card indexes stale."""
        recipe = json.dumps({"format": CARD_FORMAT, **asdict(self.weights)}, sort_keys=True)
        digest = hashlib.sha256(recipe.encode()).hexdigest()[:8]
        return f"{self.embedder.embedder_id}/card{CARD_FORMAT}-{digest}"

    def card_hash(self, card: Card) -> str:
        blob = json.dumps(
            {
                "embedder": self.embedder_id,
                "fields": card.fields(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def embed(self, cards: Sequence[Card]) -> np.ndarray:
        """(len(cards), dim) unit rows: normalised weighted sum of each card's field vectors.
        All field texts of all cards go through the model in one batched call."""
        if not cards:
            return np.zeros((0, self.dim), dtype=np.float32)
        slots: list[tuple[int, float]] = []
        texts: list[str] = []
        for row, card in enumerate(cards):
            for name, text in card.fields().items():
                slots.append((row, float(getattr(self.weights, name))))
                texts.append(text)
        vecs = self.embedder.embed(texts)  # (n_fields_total, dim)
        out = np.zeros((len(cards), self.dim), dtype=np.float64)
        for (row, weight), vec in zip(slots, vecs, strict=True):
            out[row] += weight * vec
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed_query(self, query: str) -> np.ndarray:
        """(dim,) unit vector of a query: the text as given (queries are task descriptions)."""
        return np.asarray(self.embedder.embed([query.strip()])[0], dtype=np.float32)
