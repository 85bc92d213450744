"""Editable adapter cards: adapters.card_revision and the catalog_counters table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counters = op.create_table(
        "catalog_counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_catalog_counters"),
    )
    op.bulk_insert(counters, [{"name": "card_revision", "value": 0}])
    op.add_column(
        "adapters",
        sa.Column("card_revision", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_index("ix_adapters_card_revision", "adapters", ["card_revision"])


def downgrade() -> None:
    op.drop_index("ix_adapters_card_revision", table_name="adapters")
    with op.batch_alter_table("adapters") as batch:
        batch.drop_column("card_revision")
    op.drop_table("catalog_counters")
