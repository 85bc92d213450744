"""The catalog's facet columns, for browse pages that count facets over every adapter.

A browse page shows 20 adapters but counts its facets over all of them. Building a full item
model for each (ORM entity, every JSON column decoded, pydantic validation) was ~80 % of a page
view at 2,000 adapters; the counts need five small columns. So this reads only those, as plain
tuples, for the latest version of every adapter, and the page's own items are fetched by id.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.catalog.base import CatalogBase
from storage.catalog.convert import item_rank
from storage.catalog.search_queries import only_latest
from storage.catalog.tables import Adapter, AdapterVersion


@dataclass(frozen=True)
class FacetRow:
    """What the browse facets read from one adapter's latest version. Attribute names and
    meanings match ``AdapterItem``'s, so a facet function reads either."""

    version_id: int
    base_model: str | None
    tags: tuple[str, ...]
    rank: int
    source: str
    license: str | None


class FacetQueriesMixin(CatalogBase):
    def latest_facet_rows(self) -> list[FacetRow]:
        """Every adapter's latest version, in ``list_items`` order (name, then version)."""
        q = only_latest(
            select(
                AdapterVersion.id,
                AdapterVersion.base_model_id,
                Adapter.tags,
                AdapterVersion.module_ranks,
                AdapterVersion.source,
                Adapter.license,
            )
        ).order_by(Adapter.name, AdapterVersion.version)

        def run(s: Session) -> list[FacetRow]:
            return [
                FacetRow(
                    version_id=vid,
                    base_model=base,
                    tags=tuple(tags or ()),
                    rank=item_rank(ranks),
                    source=source,
                    license=license_,
                )
                for vid, base, tags, ranks, source, license_ in s.execute(q)
            ]

        return self._read(run)
