"""The loradex catalog: SQLAlchemy 2.0 on SQLite (default) or PostgreSQL, Alembic migrations."""

from __future__ import annotations

from sqlalchemy.engine import URL

from storage.catalog.engine import make_engine
from storage.catalog.migrate import upgrade
from storage.catalog.repository import Catalog, NewVersion, ParentSpec


def open_catalog(url: str | URL, *, migrate: bool = True) -> Catalog:
    """Open the catalog at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``),
    bringing its schema to the latest revision first unless ``migrate`` is False."""
    engine = make_engine(url)
    if migrate:
        try:
            upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
    return Catalog(engine)


__all__ = ["Catalog", "NewVersion", "ParentSpec", "open_catalog"]
