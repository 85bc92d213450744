"""Lineage read in the child direction: which versions were derived from a given one.

``get_detail`` already lists a version's parents (edges keep the parent's name and version even
after it is deleted); the web catalog's lineage graph also needs the other direction, which is
one indexed query on ``lineage_edges.parent_version_id``. A function over the catalog rather
than a method on it, so that it does not touch the class other parts of the catalog extend.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.models import ParentRef
from storage.catalog.base import CatalogBase
from storage.catalog.tables import Adapter, AdapterVersion, LineageEdge


def children_of(catalog: CatalogBase, version_id: int, *, limit: int = 1000) -> list[ParentRef]:
    """Versions with a lineage edge from ``version_id``, oldest first. Each is returned as a
    ``ParentRef``-shaped link (name, version, relation, weight) naming the *child* end."""

    def run(s: Session) -> list[ParentRef]:
        rows = s.execute(
            select(Adapter.name, AdapterVersion.version, LineageEdge.relation, LineageEdge.weight)
            .select_from(LineageEdge)
            .join(AdapterVersion, AdapterVersion.id == LineageEdge.child_version_id)
            .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
            .where(LineageEdge.parent_version_id == version_id)
            .order_by(AdapterVersion.id, LineageEdge.position)
            .limit(limit)
        )
        return [
            ParentRef(name=name, version=version, relation=relation, weight=weight)
            for name, version, relation, weight in rows
        ]

    return catalog._read(run)
