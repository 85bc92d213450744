"""What a Hub pull asks for and what it reports: the request (checked without the network), one
outcome per repository, and the report's summary. The steps themselves are ``hub.services.sync``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from hub.core.errors import BadInputError, HubError
from hub.core.models import AdapterItem
from hub.core.names import validate_name
from storage.hf_hub import parse_repo_spec

MAX_PULL = 1000
SAME_WEIGHTS = "same weights as the existing version (only other files changed)"
Progress = Callable[[int, int, str], None]


def derived_name(repo_id: str) -> str:
    """``owner/name`` -> ``owner--name``: unique per repo (the Hub forbids "--" in ids, as
    its own cache folders rely on) and a legal adapter name."""
    return validate_name(repo_id.replace("/", "--"))


@dataclass
class RepoOutcome:
    repo: str
    status: Literal["created", "updated", "skipped", "failed"]  # updated: the card only
    requested: str | None = None  # the revision asked for; None = default branch
    revision: str | None = None  # the commit sha it was pinned to
    item: AdapterItem | None = None
    reason: str | None = None  # why it was skipped (dry run: what a pull would do)
    error: HubError | None = None
    warnings: list[str] = field(default_factory=list)
    planned: str | None = None  # dry run: the adapter name a pull would register under
    weights_bytes: int | None = None  # weights downloaded (dry run: that a pull would download)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "status": self.status,
            "requested": self.requested,
            "revision": self.revision,
            "adapter": f"{self.item.name}@{self.item.version}" if self.item else self.planned,
            "reason": self.reason,
            "error": self.error.to_dict() if self.error else None,
            "warnings": self.warnings,
            "weights_bytes": self.weights_bytes,
        }


@dataclass
class PullReport:
    outcomes: list[RepoOutcome]
    dry_run: bool = False  # statuses say what a pull would do; nothing was written

    def _with(self, status: str) -> list[RepoOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def created(self) -> list[AdapterItem]:
        return [o.item for o in self._with("created") if o.item is not None]

    @property
    def failed(self) -> list[RepoOutcome]:
        return self._with("failed")

    def summary(self) -> str:
        if not self.outcomes:
            return "no adapter repositories matched"
        statuses = ("created", "updated", "skipped", "failed")
        parts = [f"{len(self._with(s))} {s}" for s in statuses if s != "updated" or self._with(s)]
        text = ", ".join(parts)
        if self.dry_run:
            weights = sum(o.weights_bytes or 0 for o in self.outcomes)
            text = (
                f"dry run, nothing downloaded or registered: would be {text}; "
                f"{weights / 1e6:.1f} MB of weights to download"
            )
        if self.failed:
            first = self.failed[0]
            assert first.error is not None
            text += f" (first failure: {first.repo}: {first.error.code})"
        return text


@dataclass(frozen=True)
class PullTargets:
    """What a pull asks for, checked without touching the network."""

    repos: tuple[tuple[str, str | None], ...] = ()
    base_model: str | None = None
    author: str | None = None
    search: str | None = None
    tags: tuple[str, ...] = ()
    limit: int = 20
    name: str | None = None
    update_card: bool = False  # weights already here: take the Hub card anyway
    dry_run: bool = False  # report what a pull would do; download no weights, write nothing

    @classmethod
    def checked(
        cls,
        *,
        repos: Sequence[str] = (),
        base_model: str | None = None,
        author: str | None = None,
        search: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 20,
        name: str | None = None,
        update_card: bool = False,
        dry_run: bool = False,
    ) -> PullTargets:
        parsed = tuple(dict.fromkeys(parse_repo_spec(r) for r in repos))
        filtering = any((base_model, author, search, tags))
        if parsed and filtering:
            raise BadInputError(
                "give either repositories (repos; CLI --repo) or filters (base_model, author, "
                "search, tags; CLI --base/--author/--search/--tag), not both",
                code="invalid_sync_request",
            )
        if not parsed and not filtering:
            raise BadInputError(
                "nothing to pull: give repositories (repos; CLI --repo ID[@REV]) or at least "
                "one filter (base_model, author, search, tags; CLI --base/--author/--search/--tag)",
                code="invalid_sync_request",
            )
        if name is not None and len(parsed) != 1:
            raise BadInputError(
                "a name (CLI --name) needs exactly one repository (each repository becomes its "
                "own adapter)",
                code="invalid_sync_request",
            )
        if not 1 <= limit <= MAX_PULL:
            raise BadInputError(f"limit must be 1..{MAX_PULL}, got {limit}", code="invalid_limit")
        if name is not None:
            validate_name(name)
        return cls(
            parsed, base_model, author, search, tuple(tags), limit, name, update_card, dry_run
        )
