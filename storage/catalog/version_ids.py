"""Row ids of many (name, version) pairs in one query.

Search filters are applied in the catalog and handed to the index as the set of allowed version
ids; resolving them one ``version_id`` call at a time costs a query per adapter (seconds at a
few thousand adapters), so this resolves them all at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from storage.catalog.base import CatalogBase
from storage.catalog.tables import Adapter, AdapterVersion

CHUNK = 500  # pairs per IN clause: well under SQLite's and PostgreSQL's parameter limits


def version_ids(
    catalog: CatalogBase, refs: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """``(name, version) -> version row id`` for the pairs that exist."""
    wanted = list(dict.fromkeys(refs))

    def run(s: Session) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for i in range(0, len(wanted), CHUNK):
            rows = s.execute(
                select(Adapter.name, AdapterVersion.version, AdapterVersion.id)
                .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
                .where(tuple_(Adapter.name, AdapterVersion.version).in_(wanted[i : i + CHUNK]))
            )
            out.update({(name, version): vid for name, version, vid in rows})
        return out

    return catalog._read(run) if wanted else {}
