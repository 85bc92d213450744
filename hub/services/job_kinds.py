"""The job-kind registry: what kinds of job exist, how each validates its spec and runs.

Built-in kinds (merge, mixture, generation, transfer, sync) register on import through the same
``register_job_kind`` hook that plugin modules named in the ``job_modules`` setting use, so the
server and every Ray worker know the same kinds. Execution lives in hub/services/jobs.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.core.errors import UnknownNameError

if TYPE_CHECKING:
    from hub.services.container import Container
    from hub.services.jobs import JobContext


@dataclass(frozen=True)
class JobOutcome:
    result_version_id: int | None = None  # the adapter version the job produced, if any
    message: str = "done"


@dataclass(frozen=True)
class JobKind:
    """A registered kind of job. ``validate`` runs at submit time and returns the spec to store
    (normalized: e.g. adapter references pinned to versions); ``run`` does the work."""

    name: str
    run: Callable[[Container, dict[str, Any], JobContext], JobOutcome]
    validate: Callable[[Container, dict[str, Any]], dict[str, Any]] | None = None
    description: str = ""
    # Runs faster on a GPU: the Ray backend then asks for one (num_gpus=1) when the cluster
    # has any, unless the spec pins ``"device": "cpu"``.
    wants_gpu: bool = False


def job_wants_gpu(kind: JobKind, spec: dict[str, Any]) -> bool:
    return kind.wants_gpu and spec.get("device", "auto") != "cpu"


_KINDS: dict[str, JobKind] = {}


def register_job_kind(kind: JobKind, *, replace: bool = False) -> JobKind:
    if kind.name in _KINDS and not replace:
        raise ValueError(f"job kind {kind.name!r} registered twice")
    _KINDS[kind.name] = kind
    return kind


def get_job_kind(name: str) -> JobKind:
    _ensure_loaded()
    try:
        return _KINDS[name]
    except KeyError:
        known = sorted(_KINDS)
        raise UnknownNameError(
            f"unknown job kind {name!r}; known kinds: {', '.join(known)}",
            code="unknown_job_kind",
            known=known,
        ) from None


def _ensure_loaded() -> None:
    # Built-in kinds register on import, through the same hook later kinds use.
    import hub.services.generation_jobs  # noqa: F401
    import hub.services.merge_jobs  # noqa: F401
    import hub.services.mixture_jobs  # noqa: F401
    import hub.services.sync_jobs  # noqa: F401
    import hub.services.transfer_jobs  # noqa: F401


def load_job_modules(modules: list[str]) -> None:
    """Import plugin modules that register job kinds (setting ``job_modules``): the server
    and every Ray worker import the same list, so both know the same kinds."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UnknownNameError(
                f"job module {name!r} (setting job_modules) cannot be imported: {exc}",
                code="job_module_missing",
            ) from None
