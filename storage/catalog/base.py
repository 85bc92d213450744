"""Session handling shared by the catalog's parts: read sessions, retried write transactions."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from hub.core.errors import ConflictError, HubError, StorageError
from storage.catalog.engine import writer

T = TypeVar("T")
log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 12
# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, lock not available.
_PG_RETRY = {"40001", "40P01", "55P03"}


def is_transient(exc: BaseException) -> bool:
    """True for errors another attempt can succeed after: a lost race or a busy database."""
    if isinstance(exc, IntegrityError):
        # A concurrent writer took the unique key first; other violations (NOT NULL, foreign
        # key) are bugs that no retry fixes.
        return (
            getattr(exc.orig, "sqlstate", None) == "23505"
            or "unique constraint" in str(exc.orig).lower()
        )
    if not isinstance(exc, OperationalError | DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _PG_RETRY:
        return True
    msg = str(exc.orig).lower()
    return (
        "database is locked" in msg
        or "database is busy" in msg
        or "database table is locked" in msg
    )


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC); make every value aware UTC."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def aware_utc(dt: datetime) -> datetime:
    out = as_utc(dt)
    assert out is not None
    return out


class CatalogBase:
    """Owns the engine; ``_read`` and ``_write`` are the only ways parts touch the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = writer(engine)
        # Committed write transactions through this object: derived data (search indexes)
        # re-checks the catalog at once after this process wrote, and only on a timer otherwise.
        self.writes = 0

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """One round trip to the database (health checks); raises StorageError if it fails."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except DBAPIError as exc:
            raise StorageError(
                f"catalog unreachable: {exc.orig}", code="catalog_unreachable"
            ) from exc

    def __enter__(self) -> CatalogBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, fn: Callable[[Session], T]) -> T:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            return fn(s)

    def _write(self, fn: Callable[[Session], T], *, what: str = "write") -> T:
        """Run ``fn`` in one write transaction, retrying lost races and busy errors.

        Each attempt uses a fresh session whose transaction is rolled back on failure before
        the next try: retrying inside a failed transaction (MLflow's bug) fails every retry.
        """
        delay = 0.005
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with Session(self._writer, expire_on_commit=False) as s, s.begin():
                    result = fn(s)
                self.writes += 1
                return result
            except HubError:
                raise
            except (IntegrityError, OperationalError, DBAPIError) as exc:
                if not is_transient(exc):
                    raise StorageError(f"catalog {what} failed: {exc.orig}") from exc
                if attempt == WRITE_ATTEMPTS:
                    raise ConflictError(
                        f"catalog {what} kept conflicting with concurrent writers "
                        f"after {attempt} attempts: {exc.orig}"
                    ) from exc
                log.debug("catalog %s attempt %d lost a race: %s", what, attempt, exc.orig)
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")
