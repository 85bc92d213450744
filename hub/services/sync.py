"""Hugging Face Hub sync: pull PEFT adapters into the catalog, push catalog adapters to the Hub.

Pull, per repository: pin the revision to its commit sha -> skip it if a version with source
``hf://repo@sha`` already exists -> check the name is free (or already this repo's) -> skip it if
the weights' LFS sha256 is already a version's digest -> download the config; if it names a
registered base model, check the factor shapes from the weights' header (a ranged read) -> download
the weights and the card -> validate with the same strict reader as an upload -> register (blob,
then one catalog transaction). Every step before the last one writes nothing, so a failure
anywhere (404, 401, 429, a dropped connection, pickle-only weights, malformed safetensors)
registers nothing for that repository; the other repositories still go ahead, and the report
lists each one's outcome.

A pulled revision whose weights are already here adds no version, and by default leaves the
adapter's card alone (a local ``loradex edit`` is not overwritten unasked): the outcome warns when
the Hub card says something else. With ``update_card`` the Hub card's non-empty fields become the
adapter's card, also for a revision already registered (then only README.md is fetched).

A dry run (``PullTargets.dry_run``) takes the same steps up to the weights: for a new version it
fetches the config and the card (and the weights' header when a base is registered), runs the
checks a pull makes on them, and reports the outcome the pull would have with the weights' size;
nothing is downloaded past that, and nothing is written. The request and report types are in
``hub.services.sync_targets``.

Push: the version's weights (digest-verified) and config, byte for byte, plus a model card with
the Hub's metadata (see ``storage/hf_card.py``), in one commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hub.core.errors import BadInputError, ConflictError, HubError, NotFoundError
from hub.core.models import AdapterItem, AdapterMeta, ParentRef, check_base_model_id
from hub.core.names import AdapterRef
from hub.services.card_rules import card_changes, card_fields
from hub.services.registry import AddResult, RegistryService
from hub.services.sync_targets import (
    MAX_PULL,
    SAME_WEIGHTS,
    Progress,
    PullReport,
    PullTargets,
    RepoOutcome,
    derived_name,
)
from storage.hf_card import CardFacts, parse_card, render_card
from storage.hf_hub import (
    CARD_NAME,
    HfHubClient,
    HubSnapshot,
    validate_repo_id,
)
from storage.peft_config import lora_settings, parse_config_bytes
from storage.peft_format import CONFIG_NAME, WEIGHTS_NAME, ParsedAdapter, read_peft_bytes
from storage.peft_keys import factor_shapes


@dataclass
class PushReport:
    item: AdapterItem
    repo: str
    revision: str
    url: str
    files: list[str]
    private: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": f"{self.item.name}@{self.item.version}",
            "repo": self.repo,
            "revision": self.revision,
            "source": f"hf://{self.repo}@{self.revision}",
            "url": self.url,
            "files": self.files,
            "private": self.private,
        }


class SyncService:
    def __init__(self, registry: RegistryService, client: HfHubClient) -> None:
        self.registry = registry
        self.client = client

    # -- pull ---------------------------------------------------------------------------------
    def pull(self, targets: PullTargets, progress: Progress | None = None) -> PullReport:
        report = progress or (lambda done, total, message: None)
        plan = list(targets.repos) or [
            (repo_id, None)
            for repo_id in self.client.list_adapters(
                base_model=targets.base_model,
                author=targets.author,
                search=targets.search,
                tags=targets.tags,
                limit=targets.limit,
            )
        ]
        outcomes = []
        verb = "checking" if targets.dry_run else "pulling"
        for i, (repo_id, revision) in enumerate(plan):
            report(i, len(plan), f"{verb} {repo_id}")
            outcomes.append(self._pull_one(repo_id, revision, targets))
        report(len(plan), len(plan), "done")
        return PullReport(outcomes, dry_run=targets.dry_run)

    def _pull_one(self, repo_id: str, revision: str | None, targets: PullTargets) -> RepoOutcome:
        outcome = RepoOutcome(repo_id, "failed", requested=revision)
        try:
            self._pull_checked(outcome, targets)
        except HubError as exc:
            outcome.status, outcome.error, outcome.item = "failed", exc, None
        except ValidationError as exc:  # card metadata the catalog cannot hold
            outcome.status, outcome.item = "failed", None
            outcome.error = BadInputError(f"{repo_id}: {exc.errors()[0]['msg']}", code="bad_card")
        return outcome

    def _pull_checked(self, outcome: RepoOutcome, targets: PullTargets) -> None:
        snapshot = self.client.resolve(outcome.repo, outcome.requested)
        outcome.revision = snapshot.sha
        present = self._at_source(snapshot.source)
        if present is not None:
            outcome.status, outcome.item = "skipped", present
            outcome.reason = (
                f"already registered at this revision as {present.name}@{present.version}"
            )
            if targets.update_card:
                card = self._card(snapshot, None, outcome)
                self._hub_card(outcome, present, card, apply=True, dry_run=targets.dry_run)
            return
        target = targets.name or derived_name(outcome.repo)
        if targets.name is None:
            self._check_name_free(target, outcome.repo)
        held = self._holding_weights(target, snapshot)
        if held is not None:
            outcome.status, outcome.item = "skipped", held
            outcome.reason = SAME_WEIGHTS
            card = self._card(snapshot, None, outcome)
            self._hub_card(outcome, held, card, apply=targets.update_card, dry_run=targets.dry_run)
            return
        if targets.dry_run:
            self._plan_new(outcome, snapshot, target)
            return
        download = self.client.download_adapter(
            snapshot, before_weights=lambda config: self._fits_base(snapshot, _config_base(config))
        )
        outcome.weights_bytes = len(download.weights_bytes)
        parsed = read_peft_bytes(download.config_bytes, download.weights_bytes)
        card = self._card(snapshot, download.card_text, outcome)
        added = self._register(snapshot, parsed, card, target)
        outcome.item = added.item
        outcome.warnings.extend(added.warnings)
        if added.created:
            outcome.status = "created"
        else:
            outcome.status = "skipped"
            outcome.reason = SAME_WEIGHTS
            self._hub_card(outcome, added.item, card, apply=targets.update_card, dry_run=False)

    def _plan_new(self, outcome: RepoOutcome, snapshot: HubSnapshot, target: str) -> None:
        """Dry run of a new version: every check a pull makes before the weights arrive (repo
        files and sizes, the config with the strict parser, the factor shapes from the weights'
        header against the registered base the pull would check them against, the card against
        the catalog's limits), without downloading the weights or writing anything. What only
        the weights' values show (NaN, a defect past the header) is left to the pull. Every
        check runs before ``outcome`` is filled in, so a refusal leaves no plan behind."""
        config = parse_config_bytes(self.client.download_config(snapshot))
        lora_settings(config)
        card = self._card(snapshot, None, outcome)
        self._meta(snapshot, card, target)  # a card the catalog refuses fails here, as in a pull
        base = _hub_base_model(config.get("base_model_name_or_path"), card.base_model)
        self._fits_base(snapshot, check_base_model_id(base) if base is not None else None)
        size = snapshot.files[WEIGHTS_NAME].size
        known = f"{size / 1e6:.1f} MB of weights" if size is not None else "the weights"
        exists = self.registry.exists(target)
        what = f"a new version of {target}" if exists else f"a new adapter {target}"
        outcome.status, outcome.planned, outcome.weights_bytes = "created", target, size
        outcome.reason = f"would download {known} and register {what}"

    def _fits_base(self, snapshot: HubSnapshot, base_id: str | None) -> None:
        """Refuse an adapter whose modules do not fit the registered base model ``base_id``
        from the weights' header alone, so its weights are never downloaded. A header the Hub
        will not range-read is left to the full validation after the download, which names
        the precise problem."""
        info = self.registry.catalog.get_base_model(base_id) if base_id is not None else None
        if info is None:  # no base to check against
            return
        try:
            shapes = factor_shapes(self.client.weights_header(snapshot))
        except HubError:
            return
        self.registry.check_shapes(shapes, info)

    def _holding_weights(self, name: str, snapshot: HubSnapshot) -> AdapterItem | None:
        """The version of ``name`` whose digest is the revision's weights' LFS sha256 (what
        the catalog's digest is: sha256 of the file's bytes), so a commit that changed only
        the card or other files downloads no weights. None when the Hub gives no sha256."""
        weights = snapshot.files.get(WEIGHTS_NAME)
        if weights is None or weights.sha256 is None:
            return None
        return self.registry.version_with_digest(name, weights.sha256)

    def _card(self, snapshot: HubSnapshot, text: str | None, outcome: RepoOutcome) -> CardFacts:
        """The revision's card (fetched when ``text`` is None); a card that cannot be read is
        a warning, and counts as an empty card."""
        card = parse_card(self.client.download_card(snapshot) if text is None else text)
        if card.problem:
            outcome.warnings.append(card.problem)
        return card

    def _hub_card(
        self,
        outcome: RepoOutcome,
        item: AdapterItem,
        card: CardFacts,
        *,
        apply: bool,
        dry_run: bool,
    ) -> None:
        """Weights already here: make the adapter's card the Hub's (``apply``), or warn that
        they differ. Only the Hub card's non-empty fields count, as for a new version."""
        changes = card_changes(item, card.description, card.tags, card.license)
        if not changes:
            return
        fields = " and ".join(changes)
        if not apply:
            outcome.warnings.append(
                f"the Hub card at this revision has another {fields} than {item.name}'s card, "
                f"which was kept; to take the Hub's, pull again with --update-card (REST: "
                f'"update_card": true), or edit it: loradex edit {item.name}'
            )
            return
        outcome.status = "updated"
        if dry_run:
            card_fields(**changes)
            outcome.reason = f"would set the card ({fields}) from the Hub card"
            return
        self.registry.edit_card(item.name, **changes)
        outcome.item = self.registry.catalog.get_item(item.name, item.version)
        outcome.reason = (
            f"card ({fields}) set from the Hub card; weights as {item.name}@{item.version}"
        )

    def _register(
        self, snapshot: HubSnapshot, parsed: ParsedAdapter, card: CardFacts, name: str
    ) -> AddResult:
        meta = self._meta(snapshot, card, name)
        hf = {"repo": snapshot.repo_id, "revision": snapshot.sha, "requested": snapshot.requested}
        return self.registry.add_parsed(
            parsed,
            meta,
            source=snapshot.source,
            base_model=_hub_base_model(parsed.adapter.base.model_id, card.base_model),
            metadata={"hf": {**hf, "endpoint": self.client.endpoint}},
            warn_card=False,  # _hub_card says it in the pull's own terms
        )

    def _meta(self, snapshot: HubSnapshot, card: CardFacts, name: str) -> AdapterMeta:
        return AdapterMeta(
            name=name,
            description=card.description,
            tags=card.tags,
            license=card.license,
            owner=snapshot.repo_id.split("/")[0],
        )

    def _at_source(self, source: str) -> AdapterItem | None:
        items, _ = self.registry.catalog.list_items(source=source, all_versions=True, limit=1)
        return items[0] if items else None

    def _check_name_free(self, name: str, repo_id: str) -> None:
        """A derived name may only grow an adapter that holds nothing but this repo's versions;
        anything else would silently mix unrelated weights under one name."""
        items, _ = self.registry.catalog.list_items(
            name_prefix=name, all_versions=True, limit=100_000
        )
        mine = f"hf://{repo_id}@"
        other = [i for i in items if i.name == name and not i.source.startswith(mine)]
        if other:
            raise ConflictError(
                f"adapter name {name!r} is taken by {name}@{other[0].version} (source "
                f"{other[0].source}); pull {repo_id} under another name (name; CLI --name)",
                code="name_taken",
                name=name,
            )

    # -- push ---------------------------------------------------------------------------------
    def push(self, ref: AdapterRef, repo_id: str, *, private: bool = False) -> PushReport:
        validate_repo_id(repo_id)
        detail = self.registry.show(ref)
        pinned = AdapterRef(detail.name, detail.version)
        parsed = self.registry.load(pinned)  # digest-verified, re-validated
        parents = {f"{p.name}@{p.version}": self._source_of(p) for p in detail.lineage.parents}
        files = {
            CONFIG_NAME: json.dumps(detail.config, indent=2).encode(),
            WEIGHTS_NAME: parsed.weights_bytes,
            CARD_NAME: render_card(detail, repo_id, parents).encode(),
        }
        commit = self.client.push(
            repo_id, files, private=private, message=f"Upload {pinned} from loradex"
        )
        item = self.registry.catalog.get_item(detail.name, detail.version)
        return PushReport(item, repo_id, commit.sha, commit.url, sorted(files), private)

    def _source_of(self, parent: ParentRef) -> str:
        if parent.deleted:  # its name@version may now be another adapter's
            return "deleted"
        try:
            return self.registry.catalog.get_item(parent.name, parent.version).source
        except NotFoundError:
            return "deleted"


def _config_base(config_bytes: bytes) -> str | None:
    """The config's base model id, for the check before the weights are fetched (the card is
    not here yet); None when the config cannot be read: the full validation names why."""
    try:
        base = parse_config_bytes(config_bytes).get("base_model_name_or_path")
    except HubError:
        return None
    return base if isinstance(base, str) else None


def _hub_base_model(config_base: str | None, card_base: str | None) -> str | None:
    """The config's ``base_model_name_or_path`` unless it is a local path (common in configs
    saved from a training machine), in which case the card's ``base_model``."""
    local = config_base is not None and (
        config_base.startswith(("/", ".", "~")) or "\\" in config_base or ":" in config_base
    )
    return card_base if (config_base is None or local) and card_base else config_base


__all__ = [
    "MAX_PULL",
    "PullReport",
    "PullTargets",
    "PushReport",
    "RepoOutcome",
    "SyncService",
    "derived_name",
]
