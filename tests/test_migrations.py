"""Alembic migrations: the models and the migrations agree, and concurrent runners are safe."""

from __future__ import annotations

import threading

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from hub.core.models import AdapterMeta
from storage.catalog import NewVersion, open_catalog
from storage.catalog.engine import make_engine
from storage.catalog.migrate import alembic_config, current_revision, head_revision, upgrade
from storage.catalog.tables import Base

TABLES = {
    "adapters",
    "adapter_versions",
    "lineage_edges",
    "evaluations",
    "base_models",
    "jobs",
    "api_tokens",
    "catalog_counters",
}


def test_migration_matches_models(catalog_url):
    engine = make_engine(catalog_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
            assert set(inspect(conn).get_table_names()) == TABLES | {"alembic_version"}
            assert current_revision(conn) == head_revision()
            digest_ix = inspect(conn).get_indexes("adapter_versions")
            assert any(ix["column_names"] == ["digest"] for ix in digest_ix)
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(catalog_url):
    engine = make_engine(catalog_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
            conn.commit()
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        upgrade(engine)  # at head: a no-op
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_concurrent_open_catalog_migrates_once(catalog_url):
    n = 8
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def opener() -> None:
        barrier.wait()
        try:
            open_catalog(catalog_url).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=opener) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    engine = make_engine(catalog_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            assert [r[0] for r in rows] == [head_revision()]
    finally:
        engine.dispose()


def test_a_catalog_from_before_card_edits_upgrades_with_its_adapters(catalog_url):
    """0001 -> 0002 on a catalog holding an adapter: it gets card revision 0 (so search
    indexes saved before the upgrade keep their keys) and the counter row edits advance."""
    engine = make_engine(catalog_url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO adapters (name, description, tags, last_version, created_at) "
                    "VALUES ('old', 'from before', '[]', 0, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT name, card_revision FROM adapters")).one()
            assert tuple(row) == ("old", 0)
            counter = conn.execute(text("SELECT name, value FROM catalog_counters")).one()
            assert tuple(counter) == ("card_revision", 0)
    finally:
        engine.dispose()
    catalog = open_catalog(catalog_url)
    try:
        item, _ = catalog.register_version(AdapterMeta(name="old"), NewVersion("0" * 64, 1))
        assert (item.version, item.description) == (1, "from before")
        assert catalog.versions_fingerprint()[4] == 0
        assert catalog.edit_card("old", {"description": "edited"})[0].description == "edited"
        assert catalog.versions_fingerprint()[4] == 1
        assert catalog.edit_card("old", {"description": "edited"})[1] is False
    finally:
        catalog.close()
