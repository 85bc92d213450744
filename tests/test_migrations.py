"""Alembic migrations: the models and the migrations agree, and concurrent runners are safe."""

from __future__ import annotations

import threading

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from storage.catalog import open_catalog
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
