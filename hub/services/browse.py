"""Browsing the catalog the way a person does: facets with counts, pages, search, neighbours.

Facets are a registry (facet name -> the values an item has for it), so adding one is one
line. Counts are disjunctive, as in most catalog UIs: a facet's counts apply every *other*
active filter, so the alternatives to a chosen value stay visible with their counts. They are
computed over the latest version of every adapter in one catalog read of five columns per row
(``FacetRow``); full item models are built only for the page shown.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from hub.core.errors import BadInputError, HubError
from hub.core.models import AdapterItem
from hub.core.names import AdapterRef
from hub.services.lineage import LineageGraph, lineage_graph
from hub.services.registry import RegistryService
from hub.services.search import NO_WEIGHT_SEARCH

# A facet reads an AdapterItem or a storage FacetRow (same attribute names): page views count
# facets over FacetRows, search results are filtered as AdapterItems.
FacetFn = Callable[[Any], list[str]]

FACETS: dict[str, FacetFn] = {
    "base_model": lambda i: [i.base_model] if i.base_model else [],
    "tag": lambda i: list(i.tags),
    "rank": lambda i: [str(i.rank)],
    "source": lambda i: [i.source],
    "license": lambda i: [i.license] if i.license else [],
}
FACET_LABELS = {
    "base_model": "Base model",
    "tag": "Tag / family",
    "rank": "Rank",
    "source": "Source",
    "license": "License",
}
MAX_FACET_VALUES = 40


def facet_values(item: Any) -> dict[str, list[str]]:
    """Every facet's values for one item."""
    return {facet: fn(item) for facet, fn in FACETS.items()}


@dataclass(frozen=True)
class BrowseFilters:
    """One chosen value per facet (None: any). Field names are the facet names."""

    base_model: str | None = None
    tag: str | None = None
    rank: str | None = None
    source: str | None = None
    license: str | None = None

    @cached_property
    def _chosen(self) -> dict[str, str]:
        # Once per filter set: ``matches_values`` runs per item and facet on every page view.
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def active(self) -> dict[str, str]:
        return dict(self._chosen)

    def without(self, facet: str) -> BrowseFilters:
        return replace(self, **{facet: None})

    def matches(self, item: AdapterItem, skip: str | None = None) -> bool:
        return self.matches_values(facet_values(item), skip)

    def matches_values(self, values: dict[str, list[str]], skip: str | None = None) -> bool:
        """``matches`` on an item's precomputed :func:`facet_values`."""
        return all(v in values[k] for k, v in self._chosen.items() if k != skip)


@dataclass(frozen=True)
class FacetValue:
    value: str
    count: int
    selected: bool


@dataclass
class BrowsePage:
    items: list[AdapterItem]
    total: int
    page: int
    per_page: int
    facets: dict[str, list[FacetValue]] = field(default_factory=dict)
    facets_truncated: dict[str, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.per_page + 1 if self.items else 0


class BrowseService:
    def __init__(self, registry: RegistryService, search: Any) -> None:
        self.registry = registry
        self.search = search  # SearchService (indexes load lazily, on the first query)

    def browse(self, filters: BrowseFilters, *, page: int = 1, per_page: int = 20) -> BrowsePage:
        if page < 1 or not 1 <= per_page <= 200:
            raise BadInputError("page must be >= 1 and per_page 1..200", code="invalid_page")
        # Facets are counted over every adapter from five columns per row, and each row's
        # facet values are computed once (not once per facet and filter check); full item
        # models are built only for the page shown (storage/catalog/facet_queries.py).
        rows = [(row, facet_values(row)) for row in self.registry.catalog.latest_facet_rows()]
        matching = [row.version_id for row, values in rows if filters.matches_values(values)]
        start = (page - 1) * per_page
        shown_ids = matching[start : start + per_page]
        by_id = self.registry.catalog.items_by_ids(shown_ids)
        items = [by_id[i] for i in shown_ids if i in by_id]  # a row deleted since: skipped
        result = BrowsePage(items, len(matching), page, per_page)
        for facet in FACETS:
            counts = Counter(
                value
                for _, values in rows
                if filters.matches_values(values, facet)
                for value in values[facet]
            )
            chosen = filters.active().get(facet)
            ordered = sorted(counts.items(), key=_facet_order(facet))
            shown = ordered[:MAX_FACET_VALUES]
            if chosen is not None and chosen not in dict(shown):
                shown.append((chosen, counts.get(chosen, 0)))
            result.facets[facet] = [FacetValue(v, c, v == chosen) for v, c in shown]
            if len(ordered) > len(shown):
                result.facets_truncated[facet] = len(ordered) - len(shown)
        return result

    def search_items(
        self, query: str, *, mode: str = "hybrid", k: int = 20, filters: BrowseFilters
    ) -> list[Any]:
        """Search hits (SearchResult) that also pass the rank and license filters, which the
        search service does not know (it filters by base model, tag and source itself)."""
        hits = self.search.search(
            query, k=k, mode=mode, base_model=filters.base_model, tag=filters.tag,
            source=filters.source,
        )  # fmt: skip
        return [h for h in hits if filters.matches(h.item)]

    def similar(self, ref: AdapterRef, *, k: int = 8) -> tuple[list[Any], str]:
        """Nearest adapters in weight space; before a weight encoder is trained, the nearest by
        card text instead. Returns (hits, "weights" | "text")."""
        try:
            return self.search.similar(ref, k=k), "weights"
        except HubError as exc:
            if exc.code not in NO_WEIGHT_SEARCH:
                raise
        detail = self.registry.show(ref)
        query = (detail.description.strip() or detail.name.replace("_", " "))[:2000]
        hits = self.search.search(query, k=k + 1, mode="text")
        return [h for h in hits if h.item.name != detail.name][:k], "text"

    def lineage(self, ref: AdapterRef) -> LineageGraph:
        return lineage_graph(self.registry, ref)

    def versions(self, name: str) -> list[AdapterItem]:
        items, _ = self.registry.ls(name_prefix=name, all_versions=True, limit=10**6)
        return [i for i in items if i.name == name]


def _facet_order(facet: str) -> Callable[[tuple[str, int]], Any]:
    if facet == "rank":  # numbers read best in numeric order
        return lambda vc: (int(vc[0]) if vc[0].isdigit() else math.inf, vc[0])
    return lambda vc: (-vc[1], vc[0])
