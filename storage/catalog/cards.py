"""Editing an adapter's card (description, tags, license) after it was registered.

The card belongs to the adapter, not to a version: every version shows it, and registering a
new version with a non-empty description or tags replaces them. An edit also advances the
catalog-wide card revision, stamped on the adapter row, so search indexes notice it (the
revision is part of the catalog fingerprint) and re-embed only the edited cards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hub.core.errors import NotFoundError
from hub.core.models import AdapterItem
from storage.catalog.base import CatalogBase
from storage.catalog.convert import to_item
from storage.catalog.tables import CARD_REVISION, Adapter, AdapterVersion, CatalogCounter

CARD_FIELDS = ("description", "tags", "license")


class CardEditsMixin(CatalogBase):
    def edit_card(self, name: str, fields: Mapping[str, Any]) -> tuple[AdapterItem, bool]:
        """Set ``fields`` (a subset of ``CARD_FIELDS``; license None clears it) on adapter
        ``name``'s card. Returns the latest version's item and whether anything changed; an
        edit that changes nothing writes nothing and does not advance the card revision."""
        unknown = set(fields) - set(CARD_FIELDS)
        if unknown:
            raise ValueError(f"not card fields: {sorted(unknown)}")

        def run(s: Session) -> tuple[AdapterItem, bool]:
            adapter = s.scalars(
                select(Adapter).where(Adapter.name == name).with_for_update()
            ).first()
            if adapter is None:
                raise NotFoundError(f"adapter {name!r} not found", name=name)
            changes = {f: v for f, v in fields.items() if getattr(adapter, f) != v}
            if changes:
                for field, value in changes.items():
                    setattr(adapter, field, value)
                # the adapter row is locked first and the counter last, by every edit: no
                # lock-order cycle between two edits or an edit and a registration
                adapter.card_revision = _next_card_revision(s)
            latest = s.scalars(
                select(AdapterVersion)
                .where(AdapterVersion.adapter_id == adapter.id)
                .order_by(AdapterVersion.version.desc())
                .limit(1)
            ).one()
            s.flush()
            return to_item(latest, adapter), bool(changes)

        return self._write(run, what=f"edit_card({name})")


def _next_card_revision(s: Session) -> int:
    bump = (
        update(CatalogCounter)
        .where(CatalogCounter.name == CARD_REVISION)
        .values(value=CatalogCounter.value + 1)
    )
    if s.execute(bump).rowcount == 0:  # type: ignore[attr-defined]  # a CursorResult
        s.add(CatalogCounter(name=CARD_REVISION, value=1))  # the migration's row is gone
        s.flush()
        return 1
    return int(
        s.execute(
            select(CatalogCounter.value).where(CatalogCounter.name == CARD_REVISION)
        ).scalar_one()
    )
