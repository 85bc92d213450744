"""Jobs and base models: the catalog parts that are not adapter versions."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.errors import BadInputError, ConflictError, NotFoundError
from hub.core.models import (
    OPEN_JOB_STATES,
    TERMINAL_JOB_STATES,
    BaseModelInfo,
    JobRecord,
    JobState,
)
from storage.catalog.base import CatalogBase, as_utc, aware_utc
from storage.catalog.convert import to_base_model
from storage.catalog.tables import Adapter, AdapterVersion, BaseModelRow, Job, utcnow

JOB_STATES: frozenset[str] = frozenset(get_args(JobState))
_JOB_FIELDS = frozenset(
    {"state", "progress", "message", "spec", "result_version_id", "error", "started_at",
     "finished_at"}
)  # fmt: skip


class JobsMixin(CatalogBase):
    def create_job(
        self, kind: str, spec: dict[str, Any] | None = None, *, state: str = "queued"
    ) -> JobRecord:
        """A new job row. ``queued`` rows are for the data directory's job runner to take; a
        caller that runs the job itself creates it ``running``, so no runner can take it in
        the moment between creating the row and starting it."""
        if state not in OPEN_JOB_STATES:
            raise BadInputError(
                f"a new job is {' or '.join(sorted(OPEN_JOB_STATES))}, not {state!r}"
            )

        def run(s: Session) -> JobRecord:
            job = Job(id=str(uuid.uuid4()), kind=kind, state=state, spec=dict(spec or {}))
            if state == "running":
                job.started_at = utcnow()
            s.add(job)
            s.flush()
            return _to_job(s, job)

        return self._write(run, what="create_job")

    def get_job(self, job_id: str) -> JobRecord:
        return self._read(lambda s: _to_job(s, _job(s, job_id)))

    def update_job(
        self, job_id: str, *, only_from: Collection[str] | None = None, **fields: Any
    ) -> JobRecord:
        """Set job fields; entering ``running`` or a terminal state stamps the time once.

        With ``only_from`` the change is a compare-and-set: it applies only while the row's
        state is one of those, checked under the row's write lock, so two processes cannot
        both move one ``queued`` job to ``running``. Otherwise ConflictError
        ``job_state_changed`` (carrying the state found) and nothing is written."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise BadInputError(
                f"unknown job fields {sorted(unknown)}; known: {sorted(_JOB_FIELDS)}"
            )
        state = fields.get("state")
        if state is not None and state not in JOB_STATES:
            raise BadInputError(f"invalid job state {state!r}; one of {sorted(JOB_STATES)}")
        if "progress" in fields and not 0.0 <= float(fields["progress"]) <= 1.0:
            raise BadInputError(f"job progress {fields['progress']} is outside 0..1")

        def run(s: Session) -> JobRecord:
            job = _job(s, job_id, lock=True)
            if only_from is not None and job.state not in only_from:
                raise ConflictError(
                    f"job {job_id} is {job.state}, not {' or '.join(sorted(only_from))}",
                    code="job_state_changed",
                    state=job.state,
                )
            for key, value in fields.items():
                setattr(job, key, value)
            if state == "running" and job.started_at is None:
                job.started_at = utcnow()
            if state in TERMINAL_JOB_STATES and job.finished_at is None:
                job.finished_at = utcnow()
            s.flush()
            return _to_job(s, job)

        return self._write(run, what="update_job")

    def list_jobs(self, state: str | None = None, *, limit: int = 100) -> list[JobRecord]:
        def run(s: Session) -> list[JobRecord]:
            q = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
            if state is not None:
                q = q.where(Job.state == state)
            return [_to_job(s, j) for j in s.scalars(q)]

        return self._read(run)


class BaseModelsMixin(CatalogBase):
    def register_base_model(self, info: BaseModelInfo) -> BaseModelInfo:
        """Insert or replace the base model ``info.model_id`` (concurrent upserts retry)."""

        def run(s: Session) -> BaseModelInfo:
            row = s.get(BaseModelRow, info.model_id, with_for_update=True)
            if row is None:
                row = BaseModelRow(model_id=info.model_id)
                s.add(row)
            row.revision = info.revision
            row.fingerprint = info.fingerprint
            row.architecture = info.architecture
            row.module_shapes = {k: [int(v[0]), int(v[1])] for k, v in info.module_shapes.items()}
            s.flush()
            return to_base_model(row)

        return self._write(run, what="register_base_model")

    def get_base_model(self, model_id: str) -> BaseModelInfo | None:
        def run(s: Session) -> BaseModelInfo | None:
            row = s.get(BaseModelRow, model_id)
            return None if row is None else to_base_model(row)

        return self._read(run)

    def list_base_models(self) -> list[BaseModelInfo]:
        def run(s: Session) -> list[BaseModelInfo]:
            rows = s.scalars(select(BaseModelRow).order_by(BaseModelRow.model_id))
            return [to_base_model(r) for r in rows]

        return self._read(run)


def _job(s: Session, job_id: str, *, lock: bool = False) -> Job:
    job = s.get(Job, job_id, with_for_update=lock)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found", job_id=job_id)
    return job


def _to_job(s: Session, job: Job) -> JobRecord:
    result = None
    if job.result_version_id is not None:
        row = s.execute(
            select(Adapter.name, AdapterVersion.version)
            .join(AdapterVersion, AdapterVersion.adapter_id == Adapter.id)
            .where(AdapterVersion.id == job.result_version_id)
        ).first()
        result = None if row is None else f"{row[0]}@{row[1]}"
    return JobRecord(
        id=job.id,
        kind=job.kind,
        state=job.state,  # type: ignore[arg-type]
        progress=job.progress,
        message=job.message or "",
        spec=dict(job.spec or {}),
        result=result,
        error=job.error,
        created_at=aware_utc(job.created_at),
        started_at=as_utc(job.started_at),
        finished_at=as_utc(job.finished_at),
    )
