"""The ``sync`` job kind: a Hub pull or push submitted over REST (``POST /sync``) runs in a worker.

Submit-time validation needs no network: the request's shape, repository ids and revisions, the
pull's filters-or-repos rule, and for a push the adapter (pinned to a version then, so the job
pushes what existed when it was submitted). The Hub is only contacted by the worker.

A pull job succeeds when at least one repository did not fail (or none matched); its message
summarizes the outcomes and ``spec.report`` (added when the job ends) lists each repository's.
The job's ``result`` is the last adapter version it created, or the version a push published.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter

from hub.core.json_input import JsonBody
from hub.core.names import AdapterRef
from hub.services.job_kinds import JobKind, JobOutcome, register_job_kind
from hub.services.job_specs import parse_job_spec, with_pins
from hub.services.jobs import JobContext
from hub.services.merge_jobs import NAME_PATTERN, NO_NUL, REF_PATTERN, Tag

if TYPE_CHECKING:
    from hub.services.container import Container
    from hub.services.sync import PullReport, PullTargets

_REPO = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*$"
RepoId = Annotated[str, StringConstraints(max_length=193, pattern=_REPO)]
RepoSpec = Annotated[str, StringConstraints(max_length=450, pattern=r"^[^\s\x00@]+(@[^\s\x00]+)?$")]
Text = Annotated[str, StringConstraints(max_length=256, pattern=NO_NUL)]


class SyncPull(JsonBody):
    """Pull ``repos``, or the adapters matching every filter given."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["pull"]
    repos: list[RepoSpec] = Field(
        default_factory=list, max_length=100, description="OWNER/NAME[@REVISION] each."
    )
    base_model: Text | None = Field(default=None, description="Adapters of this base model.")
    author: Text | None = Field(default=None, description="Only this user or organization.")
    search: Text | None = Field(default=None, description="Substring of the repository id.")
    tags: list[Tag] = Field(default_factory=list, max_length=16, description="Hub tags (all).")
    limit: int = Field(default=20, ge=1, le=1000, description="Pull at most this many.")
    name: str | None = Field(
        default=None,
        max_length=128,
        pattern=NAME_PATTERN,
        description="Adapter name for a single repo (default OWNER--NAME).",
    )
    update_card: bool = Field(
        default=False,
        description="Where the weights are already here, make the adapter's card the Hub "
        "card's (its non-empty fields).",
    )
    dry_run: bool = Field(
        default=False,
        description="Only report what the pull would do (the checks made before the weights "
        "arrive, and the weights' sizes); download no weights, register nothing.",
    )


class SyncPush(JsonBody):
    """Push ``adapter`` (NAME or NAME@VERSION) to the Hub repository ``repo``."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["push"]
    adapter: str = Field(max_length=140, pattern=REF_PATTERN, description="NAME[@VERSION].")
    repo: RepoId = Field(description="The target OWNER/NAME (created when missing).")
    private: bool = Field(default=False, description="Create the repository private.")


# The body of ``POST /sync`` and the spec stored on the job.
SyncJobSpec = Annotated[SyncPull | SyncPush, Field(discriminator="action")]
_SPEC: TypeAdapter[SyncPull | SyncPush] = TypeAdapter(SyncJobSpec)


def _parse(raw: dict[str, Any]) -> SyncPull | SyncPush:
    return parse_job_spec(_SPEC, raw, "sync")


def validate_sync(container: Container, raw: dict[str, Any]) -> dict[str, Any]:
    from storage.hf_hub import validate_repo_id

    spec = _parse(raw)
    if isinstance(spec, SyncPull):
        _targets(spec)
        return spec.model_dump(mode="json")
    validate_repo_id(spec.repo)
    ref = AdapterRef.parse(spec.adapter)
    item = container.registry.catalog.get_item(ref.name, ref.version)
    label = f"{item.name}@{item.version}"
    return with_pins({**spec.model_dump(mode="json"), "adapter": label}, [item])


def _targets(spec: SyncPull) -> PullTargets:
    from hub.services.sync import PullTargets

    return PullTargets.checked(
        repos=spec.repos,
        base_model=spec.base_model,
        author=spec.author,
        search=spec.search,
        tags=spec.tags,
        limit=spec.limit,
        name=spec.name,
        update_card=spec.update_card,
        dry_run=spec.dry_run,
    )


def run_sync(container: Container, raw: dict[str, Any], ctx: JobContext) -> JobOutcome:
    # The stored spec also holds job bookkeeping (cancel flag, report): keep the model's fields.
    model = SyncPush if raw.get("action") == "push" else SyncPull
    spec = model.model_validate({k: v for k, v in raw.items() if k in model.model_fields})
    if isinstance(spec, SyncPush):
        return _run_push(container, spec, ctx)
    return _run_pull(container, spec, ctx)


def _run_push(container: Container, spec: SyncPush, ctx: JobContext) -> JobOutcome:
    ctx.progress(0.0, f"pushing {spec.adapter} to {spec.repo}")
    pushed = container.sync.push(AdapterRef.parse(spec.adapter), spec.repo, private=spec.private)
    version_id = container.catalog.version_id(pushed.item.name, pushed.item.version)
    return JobOutcome(version_id, f"pushed {spec.adapter} to hf://{spec.repo}@{pushed.revision}")


def _run_pull(container: Container, spec: SyncPull, ctx: JobContext) -> JobOutcome:
    def on_progress(done: int, total: int, message: str) -> None:
        ctx.progress(done / max(total, 1), message)  # raises once the job is cancelled

    ctx.progress(0.0, "listing adapters" if not spec.repos else "resolving revisions")
    report = container.sync.pull(_targets(spec), progress=on_progress)
    _store_report(container, ctx.job_id, report)
    if report.outcomes and len(report.failed) == len(report.outcomes):
        error = report.failed[0].error
        assert error is not None
        raise error  # the job fails with the (first) repository's error
    created = report.created
    last = created[-1] if created else None
    version_id = container.catalog.version_id(last.name, last.version) if last else None
    return JobOutcome(version_id, report.summary())


def _store_report(container: Container, job_id: str, report: PullReport) -> None:
    job = container.catalog.get_job(job_id)
    outcomes = [o.to_dict() for o in report.outcomes]
    container.catalog.update_job(job_id, spec={**job.spec, "report": outcomes})


SYNC_JOB = register_job_kind(
    JobKind(
        "sync",
        run=run_sync,
        validate=validate_sync,
        description="Pull adapters from or push one to the Hugging Face Hub.",
    )
)
