"""Initial catalog schema: adapters, versions, lineage, evaluations, base models, jobs, tokens.

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(256), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("license", sa.String(128), nullable=True),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_adapters"),
        sa.UniqueConstraint("name", name="uq_adapters_name"),
    )
    op.create_table(
        "base_models",
        sa.Column("model_id", sa.String(256), nullable=False),
        sa.Column("revision", sa.String(256), nullable=True),
        sa.Column("fingerprint", sa.String(128), nullable=True),
        sa.Column("architecture", sa.String(128), nullable=True),
        sa.Column("module_shapes", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("model_id", name="pk_base_models"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    _create_adapter_versions()
    _create_version_children()


def _create_adapter_versions() -> None:
    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("base_model_id", sa.String(256), nullable=True),
        sa.Column("base_model_revision", sa.String(256), nullable=True),
        sa.Column("base_model_fingerprint", sa.String(128), nullable=True),
        sa.Column("architecture", sa.String(128), nullable=True),
        sa.Column("target_modules", sa.JSON(), nullable=False),
        sa.Column("module_ranks", sa.JSON(), nullable=False),
        sa.Column("module_shapes", sa.JSON(), nullable=False),
        sa.Column("dtype", sa.String(16), nullable=True),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("mergeable", sa.Boolean(), nullable=False),
        sa.Column("not_mergeable_reason", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("text_hash", sa.String(64), nullable=True),
        sa.Column("artifact_digest", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"],
            ["adapters.id"],
            name="fk_adapter_versions_adapter_id_adapters",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_adapter_versions"),
        sa.UniqueConstraint("adapter_id", "version", name="uq_adapter_versions_adapter_id_version"),
        sa.UniqueConstraint("adapter_id", "digest", name="uq_adapter_versions_adapter_id_digest"),
    )
    op.create_index("ix_adapter_versions_digest", "adapter_versions", ["digest"])
    op.create_index("ix_adapter_versions_base_model_id", "adapter_versions", ["base_model_id"])
    op.create_index("ix_adapter_versions_artifact_digest", "adapter_versions", ["artifact_digest"])


def _version_fk(column: str, table: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        ["adapter_versions.id"],
        name=f"fk_{table}_{column}_adapter_versions",
        ondelete=ondelete,
    )


def _create_version_children() -> None:
    op.create_table(
        "lineage_edges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("child_version_id", sa.Integer(), nullable=False),
        sa.Column("parent_version_id", sa.Integer(), nullable=True),
        sa.Column("parent_name", sa.String(128), nullable=False),
        sa.Column("parent_version", sa.Integer(), nullable=False),
        sa.Column("relation", sa.String(64), nullable=False),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        _version_fk("child_version_id", "lineage_edges", "CASCADE"),
        _version_fk("parent_version_id", "lineage_edges", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_lineage_edges"),
    )
    op.create_index("ix_lineage_edges_child_version_id", "lineage_edges", ["child_version_id"])
    op.create_index("ix_lineage_edges_parent_version_id", "lineage_edges", ["parent_version_id"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(256), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        _version_fk("version_id", "evaluations", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
    )
    op.create_index("ix_evaluations_version_id", "evaluations", ["version_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("result_version_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        _version_fk("result_version_id", "jobs", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])


def downgrade() -> None:
    for index, table in [
        ("ix_jobs_state", "jobs"),
        ("ix_evaluations_version_id", "evaluations"),
        ("ix_lineage_edges_parent_version_id", "lineage_edges"),
        ("ix_lineage_edges_child_version_id", "lineage_edges"),
        ("ix_adapter_versions_base_model_id", "adapter_versions"),
        ("ix_adapter_versions_digest", "adapter_versions"),
    ]:
        op.drop_index(index, table_name=table)
    for table in [
        "jobs",
        "evaluations",
        "lineage_edges",
        "adapter_versions",
        "api_tokens",
        "base_models",
        "adapters",
    ]:
        op.drop_table(table)
