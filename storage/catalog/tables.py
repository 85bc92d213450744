"""Declarative tables of the catalog (ARCHITECTURE.md, Data model).

The initial Alembic revision (``storage/migrations/versions/0001_initial.py``) must create
exactly these; ``tests/test_migrations.py`` compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so migrations can address them on both dialects.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# none_as_null: a missing value is SQL NULL, not the JSON literal 'null'.
JSONNull = JSON(none_as_null=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Adapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    owner: Mapped[str | None] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    license: Mapped[str | None] = mapped_column(String(128))
    # Highest version number ever assigned: numbers are never reused after a delete, so
    # NAME@N always means the same bytes.
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The catalog-wide card revision (catalog_counters) of this adapter's last card edit, 0 if
    # never edited: the search indexes re-embed a card whose revision moved, and find the cards
    # edited since a sync through this index without listing the catalog.
    card_revision: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0", index=True
    )


CARD_REVISION = "card_revision"  # the catalog_counters row that card edits advance


class CatalogCounter(Base):
    """Catalog-wide counters, one row each. ``card_revision`` goes up by one per card edit
    (``UPDATE ... SET value = value + 1``: edits in concurrent transactions get distinct values,
    so a search index that saw revision N never misses an edit committed later)."""

    __tablename__ = "catalog_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class AdapterVersion(Base):
    __tablename__ = "adapter_versions"
    __table_args__ = (
        UniqueConstraint("adapter_id", "version"),
        UniqueConstraint("adapter_id", "digest"),
        Index("ix_adapter_versions_digest", "digest"),
        Index("ix_adapter_versions_base_model_id", "base_model_id"),
        Index("ix_adapter_versions_artifact_digest", "artifact_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    base_model_id: Mapped[str | None] = mapped_column(String(256))
    base_model_revision: Mapped[str | None] = mapped_column(String(256))
    base_model_fingerprint: Mapped[str | None] = mapped_column(String(128))
    architecture: Mapped[str | None] = mapped_column(String(128))
    target_modules: Mapped[list[str]] = mapped_column(JSON, default=list)
    module_ranks: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    module_shapes: Mapped[dict[str, list[int]]] = mapped_column(JSON, default=dict)
    dtype: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(512), default="upload")
    mergeable: Mapped[bool] = mapped_column(Boolean, default=True)
    not_mergeable_reason: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSONNull, nullable=True)
    text_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A second blob some versions own (an RMM merge's basis + coefficients, for `revert`).
    artifact_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LineageEdge(Base):
    """Child version derived from parent version. The parent's name/version are copied so the
    lineage still reads "merged from x@2" after x@2 is deleted (its id then becomes NULL)."""

    __tablename__ = "lineage_edges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    child_version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="CASCADE"), index=True
    )
    parent_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL"), index=True, nullable=True
    )
    parent_name: Mapped[str] = mapped_column(String(128))
    parent_version: Mapped[int] = mapped_column(Integer)
    relation: Mapped[str] = mapped_column(String(64))
    weight: Mapped[float | None] = mapped_column(Float, nullable=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="CASCADE"), index=True
    )
    task: Mapped[str] = mapped_column(String(256))
    accuracy: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BaseModelRow(Base):
    __tablename__ = "base_models"

    model_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    revision: Mapped[str | None] = mapped_column(String(256))
    fingerprint: Mapped[str | None] = mapped_column(String(128))
    architecture: Mapped[str | None] = mapped_column(String(128))
    module_shapes: Mapped[dict[str, list[int]]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="SET NULL"), nullable=True
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
