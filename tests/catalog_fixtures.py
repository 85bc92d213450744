"""Catalog fixtures, registered as a plugin (``pytest_plugins = ["tests.catalog_fixtures"]``).

``catalog_url`` runs a test on SQLite (a temp file) and on PostgreSQL (a fresh database per
test on the server named by ``LORADEX_TEST_PG_URL``; skipped when that is unset).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage.catalog import Catalog, open_catalog
from storage.catalog.engine import normalize_url

PG_ENV = "LORADEX_TEST_PG_URL"


def _pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    admin = _pg_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (scripts/pg.sh start DIR PORT prints one)")
    name = f"loradex_test_{uuid.uuid4().hex}"
    engine = create_engine(normalize_url(admin), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(normalize_url(admin)).set(database=name)
        yield url.render_as_string(hide_password=False)
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def catalog_url(request) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def catalog(catalog_url) -> Iterator[Catalog]:
    cat = open_catalog(catalog_url)
    try:
        yield cat
    finally:
        cat.close()
