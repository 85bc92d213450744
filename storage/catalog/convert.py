"""Rows -> the pydantic models of hub.core.models (the catalog never returns ORM objects)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.models import (
    AdapterDetail,
    AdapterItem,
    BaseModelInfo,
    EvaluationRecord,
    Lineage,
    ModuleInfo,
    ParentRef,
)
from storage.catalog.base import as_utc, aware_utc
from storage.catalog.tables import Adapter, AdapterVersion, BaseModelRow, Evaluation, LineageEdge


def item_rank(module_ranks: dict[str, int] | None) -> int:
    """An adapter's listed rank: its largest module rank (0 with no modules)."""
    return max((int(r) for r in (module_ranks or {}).values()), default=0)


def to_item(v: AdapterVersion, a: Adapter) -> AdapterItem:
    return AdapterItem(
        name=a.name,
        version=v.version,
        base_model=v.base_model_id,
        description=a.description or "",
        tags=list(a.tags or []),
        source=v.source,
        license=a.license,
        digest=v.digest,
        size_bytes=v.size_bytes,
        base_model_revision=v.base_model_revision,
        base_model_fingerprint=v.base_model_fingerprint,
        target_modules=list(v.target_modules or []),
        rank=item_rank(v.module_ranks),
        mergeable=bool(v.mergeable),
        not_mergeable_reason=v.not_mergeable_reason,
        metadata=dict(v.metadata_ or {}),
        created_at=aware_utc(v.created_at),
    )


def to_modules(v: AdapterVersion) -> list[ModuleInfo]:
    shapes = v.module_shapes or {}
    out = []
    for name, rank in sorted((v.module_ranks or {}).items()):
        d_in, d_out = shapes.get(name, (0, 0))
        out.append(ModuleInfo(name=name, rank=int(rank), in_features=d_in, out_features=d_out))
    return out


def to_detail(s: Session, v: AdapterVersion, a: Adapter) -> AdapterDetail:
    edges = s.scalars(
        select(LineageEdge)
        .where(LineageEdge.child_version_id == v.id)
        .order_by(LineageEdge.position, LineageEdge.id)
    ).all()
    parents = [
        ParentRef(
            name=e.parent_name,
            version=e.parent_version,
            relation=e.relation,
            weight=e.weight,
            deleted=e.parent_version_id is None,
        )
        for e in edges
    ]
    evals = s.scalars(
        select(Evaluation)
        .where(Evaluation.version_id == v.id)
        .order_by(Evaluation.created_at, Evaluation.id)
    ).all()
    return AdapterDetail(
        **to_item(v, a).model_dump(),
        modules=to_modules(v),
        lineage=Lineage(parents=parents, recipe=v.recipe),
        evaluations=[to_evaluation(e) for e in evals],
        config=dict(v.config or {}),
        artifact_digest=v.artifact_digest,
    )


def to_evaluation(e: Evaluation) -> EvaluationRecord:
    return EvaluationRecord(
        task=e.task,
        accuracy=e.accuracy,
        n=e.n,
        created_at=as_utc(e.created_at),
        details=dict(e.details or {}),
    )


def to_base_model(row: BaseModelRow) -> BaseModelInfo:
    return BaseModelInfo(
        model_id=row.model_id,
        revision=row.revision,
        fingerprint=row.fingerprint,
        architecture=row.architecture,
        module_shapes={k: (int(v[0]), int(v[1])) for k, v in (row.module_shapes or {}).items()},
    )
