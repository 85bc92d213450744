"""Bring a catalog database to the latest schema, safely when many processes start at once.

Concurrent ``alembic upgrade`` runs race on the version table ("expected to match one row",
PERF-RELIABILITY B1), so every runner first takes a cross-process lock: a file lock next to a
SQLite database, ``pg_advisory_lock`` on PostgreSQL. The loser then finds the schema at head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Connection, Engine, text

from storage.catalog.engine import sqlite_path, writer

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Arbitrary constant shared by every loradex process: the key of the PostgreSQL advisory lock.
_PG_LOCK_KEY = 0x6C6F7261646578  # "loradex"
_LOCK_TIMEOUT_S = 120.0


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run ``alembic upgrade revision`` under the cross-process migration lock."""
    if engine.dialect.name == "sqlite":
        path = sqlite_path(engine.url)
        if path is None:  # in-memory: one process, nothing to race with
            _run_upgrade(engine, revision)
            return
        with FileLock(str(path) + ".migrate.lock", timeout=_LOCK_TIMEOUT_S):
            _run_upgrade(engine, revision)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        conn.commit()
        try:
            _upgrade_on(conn, revision)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()


def _run_upgrade(engine: Engine, revision: str) -> None:
    with writer(engine).connect() as conn:
        _upgrade_on(conn, revision)


def _upgrade_on(conn: Connection, revision: str) -> None:
    # Skip alembic's script loading when nothing is to do: the common case at every start.
    if revision == "head" and current_revision(conn) == head_revision():
        conn.rollback()
        return
    conn.rollback()
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
    conn.commit()
