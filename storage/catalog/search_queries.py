"""Catalog reads and writes that keep the search indexes in step with the catalog cheaply.

Search indexes hold one vector per adapter: its latest version. At 10^5 adapters a query cannot
afford to list the catalog, so the search service asks for a fingerprint first (three
aggregates over one table, a few ms) and lists the latest versions only when it changed.
Filters return only version ids (no item models), and the known filter values are listed only
when a filter matched nothing, to tell "unknown tag" from "no adapter has it right now".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from storage.catalog.base import CatalogBase
from storage.catalog.tables import CARD_REVISION, Adapter, AdapterVersion, CatalogCounter


@dataclass(frozen=True)
class LatestVersion:
    """The latest version of one adapter, as the search indexes key it."""

    id: int
    name: str
    digest: str
    text_hash: str | None
    card_revision: int = 0

    @property
    def key(self) -> str:
        """Identity of the bytes and the card owner: a reused row id never matches an old key."""
        return f"{self.name}@{self.digest}"

    @property
    def card_key(self) -> str:
        """``key`` plus the card's edit revision (none before the first edit, so indexes saved
        before cards could be edited stay valid): the text index's identity of a vector."""
        return f"{self.key}#card{self.card_revision}" if self.card_revision else self.key


_LATEST_COLUMNS = (
    AdapterVersion.id,
    Adapter.name,
    AdapterVersion.digest,
    AdapterVersion.text_hash,
    Adapter.card_revision,
)


def _of_newest_version(column: Any) -> Any:
    return select(column).order_by(AdapterVersion.id.desc()).limit(1).scalar_subquery()


_FINGERPRINT = select(
    select(func.count()).select_from(AdapterVersion).scalar_subquery(),
    _of_newest_version(AdapterVersion.id),
    _of_newest_version(AdapterVersion.adapter_id),
    _of_newest_version(AdapterVersion.digest),
    select(CatalogCounter.value).where(CatalogCounter.name == CARD_REVISION).scalar_subquery(),
    _of_newest_version(AdapterVersion.created_at),
)


class SearchQueriesMixin(CatalogBase):
    def versions_fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever a version is added or deleted or a card is edited: (count, then
        id, adapter and digest of the newest row, then the card revision, then the newest row's
        creation time). The newest row's identity catches SQLite reusing the max row id after
        a delete; its creation time, the case where the adapter id and the weights are reused
        too (`rm x` then `add` of the same weights). One statement: a count and primary-key
        lookups, no scan of a non-indexed column."""

        def run(s: Session) -> tuple[Any, ...]:
            count, vid, adapter_id, digest, revision, created = s.execute(_FINGERPRINT).one()
            return (count or 0, vid, adapter_id, digest, revision or 0, created)

        return self._read(run)

    def versions_after(self, version_id: int) -> list[LatestVersion]:
        """Versions with a row id above ``version_id`` (added since), ordered by id."""
        q = (
            select(*_LATEST_COLUMNS)
            .join(Adapter)
            .where(AdapterVersion.id > version_id)
            .order_by(AdapterVersion.id)
        )
        return self._read(lambda s: [LatestVersion(*row) for row in s.execute(q)])

    def version_identity(self, version_id: int) -> tuple[Any, ...] | None:
        """(id, adapter id, digest, creation time) of one row, None if it is gone
        (fingerprint checks)."""
        q = select(
            AdapterVersion.id,
            AdapterVersion.adapter_id,
            AdapterVersion.digest,
            AdapterVersion.created_at,
        ).where(AdapterVersion.id == version_id)
        return self._read(lambda s: (lambda r: tuple(r) if r else None)(s.execute(q).first()))

    def latest_versions(self) -> list[LatestVersion]:
        """The latest version of every adapter, ordered by version id."""
        q = only_latest(select(*_LATEST_COLUMNS)).order_by(AdapterVersion.id)
        return self._read(lambda s: [LatestVersion(*row) for row in s.execute(q)])

    def cards_edited_since(self, revision: int) -> list[LatestVersion]:
        """The latest versions of adapters whose card was edited after ``revision`` (through
        the card-revision index: O(edited), not O(catalog))."""
        # Per edited adapter, its highest version (through the (adapter_id, version) unique
        # index): ``only_latest`` would group every adapter's versions first, O(catalog).
        newest = (
            select(func.max(AdapterVersion.version))
            .where(AdapterVersion.adapter_id == Adapter.id)
            .correlate(Adapter)
            .scalar_subquery()
        )
        q = (
            select(*_LATEST_COLUMNS)
            .select_from(Adapter)
            .join(AdapterVersion, AdapterVersion.adapter_id == Adapter.id)
            .where(Adapter.card_revision > revision, AdapterVersion.version == newest)
        )  # no ORDER BY: SQLite would then scan the versions in id order instead of the index
        rows = self._read(lambda s: [LatestVersion(*row) for row in s.execute(q)])
        return sorted(rows, key=lambda v: v.id)

    def latest_version_ids(
        self, *, base_model: str | None = None, tag: str | None = None, source: str | None = None
    ) -> set[int]:
        """Ids of adapters' latest versions whose version/adapter match every given filter."""
        conds: list[ColumnElement[bool]] = []
        if base_model is not None:
            conds.append(AdapterVersion.base_model_id == base_model)
        if source is not None:
            conds.append(AdapterVersion.source == source)
        if tag is not None:
            conds.append(self._tag_filter(tag))
        q = only_latest(select(AdapterVersion.id)).where(*conds)
        return self._read(lambda s: set(s.scalars(q)))

    def known_filter_values(self, field: str) -> list[str]:
        """Distinct values of ``tag``, ``base_model`` or ``source`` (for "unknown X" errors)."""

        def run(s: Session) -> list[str]:
            if field == "tag":
                return sorted({t for tags in s.scalars(select(Adapter.tags)) for t in tags or []})
            column = {"base_model": AdapterVersion.base_model_id, "source": AdapterVersion.source}
            return sorted(v for v in s.scalars(select(column[field]).distinct()) if v is not None)

        return self._read(run)

    def set_text_hashes(self, hashes: Mapping[int, str | None]) -> None:
        """Record, in one transaction, the card-text hash embedded for each version id (rows
        deleted meanwhile are skipped)."""

        def run(s: Session) -> None:
            for version_id, text_hash in hashes.items():
                s.execute(
                    update(AdapterVersion)
                    .where(AdapterVersion.id == version_id)
                    .values(text_hash=text_hash)
                )

        if hashes:
            self._write(run, what=f"set_text_hashes({len(hashes)})")

    def _tag_filter(self, tag: str) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            return Adapter.tags.cast(postgresql.JSONB).contains([tag])
        each = func.json_each(Adapter.tags).table_valued("value")
        return exists(select(1).select_from(each).where(each.c.value == tag))


def only_latest(q: Any) -> Any:
    """Restrict a select over versions to each adapter's highest version number."""
    latest = (
        select(AdapterVersion.adapter_id, func.max(AdapterVersion.version).label("v"))
        .group_by(AdapterVersion.adapter_id)
        .subquery("latest")
    )
    on = and_(
        AdapterVersion.adapter_id == latest.c.adapter_id, AdapterVersion.version == latest.c.v
    )
    return q.select_from(AdapterVersion).join(Adapter).join(latest, on)
