"""Engines for the catalog: SQLite (embedded default) and PostgreSQL (scale-out).

SQLite settings follow PERF-RELIABILITY B1: WAL so readers never block the writer,
``synchronous=FULL`` so a commit survives power loss, ``busy_timeout`` so a second writer waits
instead of failing with "database is locked", and ``BEGIN IMMEDIATE`` for write transactions so
the write lock is taken up front (a deferred transaction that upgrades to a writer mid-way gets
SQLITE_BUSY at once, without the busy handler, when another writer committed in between).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from hub.core.errors import BadInputError

BUSY_TIMEOUT_S = 30.0
# Execution option that marks a connection as a writer (see ``writer``).
_WRITE_OPT = "loradex_write"


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` means psycopg 3 (the driver we ship)."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise BadInputError(f"unsupported catalog URL {u.render_as_string(hide_password=True)!r}")
    return u


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return None
    return Path(url.database or "")


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(u, **kwargs)
    # pre_ping: a pooled connection may have been cut by a server restart or failover.
    return create_engine(u, pool_pre_ping=True, **kwargs)


def writer(engine: Engine) -> Engine:
    """A view of ``engine`` (same pool) whose transactions take the write lock at BEGIN."""
    return engine.execution_options(**{_WRITE_OPT: True})


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    if is_memory_sqlite(url):
        # One shared connection, otherwise each pooled connection sees its own empty database.
        kwargs.setdefault("poolclass", StaticPool)
    else:
        path = sqlite_path(url)
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    memory = is_memory_sqlite(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would not BEGIN before
        # SELECTs or DDL); the "begin" hook below emits BEGIN itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not memory:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(_WRITE_OPT):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine
