"""What a search returns, and the per-catalog-generation caches that make serving it cheap."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hub.core.errors import BadInputError
from hub.core.models import AdapterItem


@dataclass
class SearchResult:
    item: AdapterItem
    score: float
    text_score: float | None
    weight_score: float | None
    why: str
    item_doc: dict[str, Any] | None = None  # item.model_dump(mode="json"), cached per generation
    item_json: str | None = None  # that doc as compact JSON, cached too

    def to_dict(self) -> dict[str, Any]:
        return {**(self.item_doc or self.item.model_dump(mode="json")), **self._scores()}

    def to_json(self) -> str:
        """``json.dumps(self.to_dict(), separators=(",", ":"))``, without re-encoding the
        item (most of the bytes) on every query."""
        item = self.item_json or compact(self.item_doc or self.item.model_dump(mode="json"))
        return f"{item[:-1]},{compact(self._scores())[1:]}"

    def _scores(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "text_score": self.text_score,
            "weight_score": self.weight_score,
            "why": self.why,
        }


def no_weight_vectors() -> BadInputError:
    return BadInputError(
        "no adapter in the catalog has a weight vector: the weight encoder cannot read any of "
        "them (another architecture or other target modules than it was trained on, or a "
        "damaged blob: see `loradex verify`); train it on these adapters with `loradex encoder "
        "train`, or search with --mode text",
        code="no_weight_vectors",
    )


class NeedsIO(Exception):
    """Inside ``search_cached``: the answer needs the catalog or the model."""


@dataclass
class Generation:
    """What is derived from one state of the catalog; replaced (not mutated) when it moves."""

    fingerprint: tuple[Any, ...] | None
    allowed: dict[tuple[Any, ...], frozenset[int]] = field(default_factory=dict)
    items: dict[int, tuple[AdapterItem, dict[str, Any], str]] = field(default_factory=dict)


def compact(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def evict_oldest(cache: dict[Any, Any], keep: int) -> None:
    """Drop the oldest entries until at most ``keep`` remain; tolerates concurrent writers
    (request threads share the cache; a lost race only skips an eviction)."""
    while len(cache) > keep:
        try:
            cache.pop(next(iter(cache)), None)
        except (StopIteration, RuntimeError):
            return
