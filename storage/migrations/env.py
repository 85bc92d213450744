"""Alembic environment for the loradex catalog.

Run programmatically only (``storage.catalog.migrate``): the caller opens the connection, holds
the cross-process migration lock on it and passes it in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from storage.catalog.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "loradex migrations run through storage.catalog.migrate(), which supplies a connection"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    compare_type=True,
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
