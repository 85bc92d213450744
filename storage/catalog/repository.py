"""The catalog: adapters, their versions, lineage and evaluations (plus jobs and base models).

Version numbers: ``register_version`` assigns ``adapters.last_version + 1`` in the same write
transaction that inserts the version, with the adapter row locked (``BEGIN IMMEDIATE`` on
SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), so concurrent writers get unique, gapless
numbers. Numbers are never reused after a delete: NAME@N always names the same bytes while the
adapter exists. Deleting an adapter's last version deletes the adapter.

Lineage survives deletion: an edge keeps the parent's name and version, and its parent id
becomes NULL (ON DELETE SET NULL), so "merged from x@2" still reads right after x@2 is gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, defer

from hub.core.errors import NotFoundError
from hub.core.models import AdapterDetail, AdapterItem, AdapterMeta, EvaluationRecord
from storage.catalog.base import CatalogBase
from storage.catalog.cards import CardEditsMixin
from storage.catalog.convert import to_detail, to_item
from storage.catalog.facet_queries import FacetQueriesMixin
from storage.catalog.jobs import BaseModelsMixin, JobsMixin
from storage.catalog.search_queries import SearchQueriesMixin
from storage.catalog.tables import Adapter, AdapterVersion, Evaluation, LineageEdge
from storage.catalog.tokens import TokensMixin

# Listing builds AdapterItems, which never read these JSON columns; decoding them was most of
# the cost of a long listing (per-module shapes of a 60-module adapter, the PEFT config).
_ITEM_ONLY = (
    defer(AdapterVersion.config),
    defer(AdapterVersion.module_shapes),
    defer(AdapterVersion.recipe),
)

ParentSpec = tuple[int, str, float | None]


@dataclass
class NewVersion:
    """Everything about one adapter version except its number (the catalog assigns that)."""

    digest: str
    size_bytes: int
    config: dict[str, Any] = field(default_factory=dict)
    base_model_id: str | None = None
    base_model_revision: str | None = None
    base_model_fingerprint: str | None = None
    architecture: str | None = None
    target_modules: list[str] = field(default_factory=list)
    module_ranks: dict[str, int] = field(default_factory=dict)
    module_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    dtype: str | None = None
    source: str = "upload"
    mergeable: bool = True
    not_mergeable_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    artifact_digest: str | None = None


class Catalog(
    JobsMixin,
    BaseModelsMixin,
    TokensMixin,
    SearchQueriesMixin,
    FacetQueriesMixin,
    CardEditsMixin,
    CatalogBase,
):
    """Catalog operations; every method is one transaction and returns pydantic models."""

    # -- writes ------------------------------------------------------------------------------
    def register_version(
        self, meta: AdapterMeta, new: NewVersion, *, parents: Sequence[ParentSpec] = ()
    ) -> tuple[AdapterItem, bool]:
        """Add ``new`` as the next version of ``meta.name`` (creating the adapter if needed).

        Idempotent on the digest: if the adapter already has a version with ``new.digest`` it
        is returned with ``created=False`` and nothing is written.
        """

        def run(s: Session) -> tuple[AdapterItem, bool]:
            return self._register_one(s, meta, new, parents)

        return self._write(run, what=f"register_version({meta.name})")

    def register_versions(
        self, batch: Sequence[tuple[AdapterMeta, NewVersion, Sequence[ParentSpec]]]
    ) -> list[tuple[AdapterItem, bool]]:
        """``register_version`` for many in ONE transaction (group commit for bulk imports:
        one durable commit instead of one per adapter). All or nothing."""

        def run(s: Session) -> list[tuple[AdapterItem, bool]]:
            return [self._register_one(s, meta, new, parents) for meta, new, parents in batch]

        return self._write(run, what=f"register_versions({len(batch)})")

    def _register_one(
        self, s: Session, meta: AdapterMeta, new: NewVersion, parents: Sequence[ParentSpec]
    ) -> tuple[AdapterItem, bool]:
        adapter = self._lock_adapter(s, meta)
        same = s.scalars(
            select(AdapterVersion).where(
                AdapterVersion.adapter_id == adapter.id, AdapterVersion.digest == new.digest
            )
        ).first()
        if same is not None:
            return to_item(same, adapter), False
        _apply_meta(adapter, meta)
        edges = _lineage_edges(s, parents)
        adapter.last_version += 1
        row = _version_row(adapter, new)
        s.add(row)
        s.flush()
        for edge in edges:
            edge.child_version_id = row.id
        s.add_all(edges)
        s.flush()
        return to_item(row, adapter), True

    def _lock_adapter(self, s: Session, meta: AdapterMeta) -> Adapter:
        """Create the adapter row if missing, then lock it for the rest of the transaction."""
        ins = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(Adapter)
        # ON CONFLICT DO NOTHING: a concurrent creator wins without failing this transaction.
        s.execute(
            ins.values(
                name=meta.name,
                owner=meta.owner,
                description=meta.description,
                tags=list(meta.tags),
                license=meta.license,
                last_version=0,
            ).on_conflict_do_nothing(index_elements=["name"])
        )
        return s.scalars(
            select(Adapter)
            .where(Adapter.name == meta.name)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()

    def add_evaluation(self, version_id: int, record: EvaluationRecord) -> EvaluationRecord:
        def run(s: Session) -> EvaluationRecord:
            if s.get(AdapterVersion, version_id) is None:
                raise NotFoundError(f"adapter version id {version_id} not found")
            row = Evaluation(
                version_id=version_id,
                task=record.task,
                accuracy=record.accuracy,
                n=record.n,
                details=dict(record.details),
            )
            if record.created_at is not None:
                row.created_at = record.created_at
            s.add(row)
            s.flush()
            return record.model_copy(update={"created_at": row.created_at})

        return self._write(run, what="add_evaluation")

    def set_text_hash(self, version_id: int, text_hash: str | None) -> None:
        """Record the hash of the text last embedded for this version (retrieval's cache key)."""

        def run(s: Session) -> None:
            row = s.get(AdapterVersion, version_id)
            if row is None:
                raise NotFoundError(f"adapter version id {version_id} not found")
            row.text_hash = text_hash

        self._write(run, what="set_text_hash")

    def delete(self, name: str, version: int | None = None) -> list[str]:
        """Delete one version, or the whole adapter when ``version`` is None.

        Returns the digests no version references any more. The caller deletes those blobs;
        a concurrent register of the same content may re-reference one, so blob GC should
        re-check ``referenced_digests()`` right before deleting.
        """

        def run(s: Session) -> list[str]:
            adapter = _adapter(s, name, lock=True)
            if version is None:
                rows = list(s.scalars(_versions_of(adapter.id)))
            else:
                rows = [_resolve_version(s, adapter, version)]
            digests = sorted({r.digest for r in rows} | {r.artifact_digest for r in rows} - {None})
            s.execute(delete(AdapterVersion).where(AdapterVersion.id.in_([r.id for r in rows])))
            if s.scalar(select(func.count()).select_from(_versions_of(adapter.id).subquery())) == 0:
                s.execute(delete(Adapter).where(Adapter.id == adapter.id))
            s.expunge_all()
            return [d for d in digests if not _digest_referenced(s, d)]

        return self._write(run, what=f"delete({name})")

    # -- reads -------------------------------------------------------------------------------
    def version_id(self, name: str, version: int | None = None) -> int:
        return self._read(lambda s: _resolve(s, name, version)[0].id)

    def get_item(self, name: str, version: int | None = None) -> AdapterItem:
        return self._read(lambda s: to_item(*_resolve(s, name, version)))

    def get_detail(self, name: str, version: int | None = None) -> AdapterDetail:
        return self._read(lambda s: to_detail(s, *_resolve(s, name, version)))

    def items_by_ids(self, version_ids: Iterable[int]) -> dict[int, AdapterItem]:
        """Version row id -> item, for ids that exist (search hits are keyed by version id)."""
        ids = list(version_ids)

        def run(s: Session) -> dict[int, AdapterItem]:
            q = (
                select(AdapterVersion, Adapter)
                .join(Adapter)
                .where(AdapterVersion.id.in_(ids))
                .options(*_ITEM_ONLY)
            )
            return {v.id: to_item(v, a) for v, a in s.execute(q)}

        return self._read(run) if ids else {}

    def list_version_ids(self) -> list[int]:
        return self._read(lambda s: list(s.scalars(select(AdapterVersion.id).order_by("id"))))

    def list_items(
        self,
        *,
        base_model: str | None = None,
        tag: str | None = None,
        source: str | None = None,
        name_prefix: str | None = None,
        all_versions: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AdapterItem], int]:
        """Versions matching every filter; per adapter only the latest matching one unless
        ``all_versions``. Returns (page ordered by name then version, total matches)."""
        conds: list[ColumnElement[bool]] = []
        if base_model is not None:
            conds.append(AdapterVersion.base_model_id == base_model)
        if source is not None:
            conds.append(AdapterVersion.source == source)
        if name_prefix:
            # substr, not LIKE: SQLite's LIKE ignores case and '_' would be a wildcard.
            conds.append(func.substr(Adapter.name, 1, len(name_prefix)) == name_prefix)
        if tag is not None:
            conds.append(self._tag_filter(tag))  # SearchQueriesMixin

        def run(s: Session) -> tuple[list[AdapterItem], int]:
            q = select(AdapterVersion, Adapter).join(Adapter).options(*_ITEM_ONLY)
            if all_versions:
                q = q.where(*conds)
            else:
                latest = (
                    select(AdapterVersion.adapter_id, func.max(AdapterVersion.version).label("v"))
                    .join(Adapter)
                    .where(*conds)
                    .group_by(AdapterVersion.adapter_id)
                    .subquery()
                )
                q = q.join(
                    latest,
                    and_(
                        AdapterVersion.adapter_id == latest.c.adapter_id,
                        AdapterVersion.version == latest.c.v,
                    ),
                )
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            page = q.order_by(Adapter.name, AdapterVersion.version).limit(limit).offset(offset)
            return [to_item(v, a) for v, a in s.execute(page)], total

        return self._read(run)

    def versions_by_digest(self, digest: str) -> list[AdapterItem]:
        def run(s: Session) -> list[AdapterItem]:
            q = (
                select(AdapterVersion, Adapter)
                .join(Adapter)
                .where(AdapterVersion.digest == digest)
                .order_by(Adapter.name, AdapterVersion.version)
            )
            return [to_item(v, a) for v, a in s.execute(q)]

        return self._read(run)

    def referenced_digests(self) -> set[str]:
        def run(s: Session) -> set[str]:
            weights = set(s.scalars(select(AdapterVersion.digest).distinct()))
            artifacts = s.scalars(
                select(AdapterVersion.artifact_digest)
                .where(AdapterVersion.artifact_digest.is_not(None))
                .distinct()
            )
            return weights | {d for d in artifacts if d is not None}

        return self._read(run)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` ("ok" when sound); PostgreSQL: "ok"."""
        if self.dialect != "sqlite":
            return "ok"
        with self.engine.connect() as conn:
            return "\n".join(r[0] for r in conn.execute(text("PRAGMA integrity_check")))


def _apply_meta(adapter: Adapter, meta: AdapterMeta) -> None:
    # Only non-empty values overwrite: registering v2 with a bare name keeps v1's description.
    if meta.description:
        adapter.description = meta.description
    if meta.tags:
        adapter.tags = list(meta.tags)
    if meta.license:
        adapter.license = meta.license
    if meta.owner:
        adapter.owner = meta.owner


def _version_row(adapter: Adapter, new: NewVersion) -> AdapterVersion:
    return AdapterVersion(
        adapter_id=adapter.id,
        version=adapter.last_version,
        digest=new.digest,
        size_bytes=new.size_bytes,
        config=dict(new.config),
        base_model_id=new.base_model_id,
        base_model_revision=new.base_model_revision,
        base_model_fingerprint=new.base_model_fingerprint,
        architecture=new.architecture,
        target_modules=list(new.target_modules),
        module_ranks={k: int(v) for k, v in new.module_ranks.items()},
        module_shapes={k: [int(v[0]), int(v[1])] for k, v in new.module_shapes.items()},
        dtype=new.dtype,
        source=new.source,
        mergeable=new.mergeable,
        not_mergeable_reason=new.not_mergeable_reason,
        metadata_=dict(new.metadata),
        recipe=new.recipe,
        artifact_digest=new.artifact_digest,
    )


def _lineage_edges(s: Session, parents: Sequence[ParentSpec]) -> list[LineageEdge]:
    edges = []
    for position, (parent_id, relation, weight) in enumerate(parents):
        row = s.execute(
            select(AdapterVersion.version, Adapter.name)
            .join(Adapter)
            .where(AdapterVersion.id == parent_id)
        ).first()
        if row is None:
            raise NotFoundError(f"lineage parent version id {parent_id} not found")
        edges.append(
            LineageEdge(
                parent_version_id=parent_id,
                parent_name=row.name,
                parent_version=row.version,
                relation=relation,
                weight=weight,
                position=position,
            )
        )
    return edges


def _versions_of(adapter_id: int) -> Any:
    return select(AdapterVersion).where(AdapterVersion.adapter_id == adapter_id)


def _digest_referenced(s: Session, digest: str) -> bool:
    return bool(
        s.scalar(
            select(
                exists().where(
                    (AdapterVersion.digest == digest) | (AdapterVersion.artifact_digest == digest)
                )
            )
        )
    )


def _adapter(s: Session, name: str, *, lock: bool = False) -> Adapter:
    q = select(Adapter).where(Adapter.name == name)
    adapter = s.scalars(q.with_for_update() if lock else q).first()
    if adapter is None:
        raise NotFoundError(f"adapter {name!r} not found", name=name)
    return adapter


def _resolve_version(s: Session, adapter: Adapter, version: int | None) -> AdapterVersion:
    q = _versions_of(adapter.id)
    if version is not None:
        q = q.where(AdapterVersion.version == version)
    row = s.scalars(q.order_by(AdapterVersion.version.desc()).limit(1)).first()
    if row is not None:
        return row
    latest = s.scalar(
        select(func.max(AdapterVersion.version)).where(AdapterVersion.adapter_id == adapter.id)
    )
    if latest is None:
        raise NotFoundError(f"adapter {adapter.name!r} has no versions", name=adapter.name)
    raise NotFoundError(
        f"adapter {adapter.name!r} has no version {version}; latest is {latest}",
        name=adapter.name,
        version=version,
        latest=latest,
    )


def _resolve(s: Session, name: str, version: int | None) -> tuple[AdapterVersion, Adapter]:
    adapter = _adapter(s, name)
    return _resolve_version(s, adapter, version), adapter
