"""Register, list, show, export and remove adapters; collect garbage; manage base models.

Write order is what makes a crash harmless: validate everything in memory (no writes), then put
the blob (temp file, fsync, atomic rename), then commit the catalog rows in one transaction. A
kill before the commit leaves at most an unreferenced blob, which ``gc`` removes; a version is
never visible without its blob.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.core.architectures import module_shapes, shape_problems
from hub.core.errors import BadInputError, HubError, IncompatibleBaseModelError, NotFoundError
from hub.core.lora import LoraAdapter
from hub.core.models import (
    AdapterDetail,
    AdapterItem,
    AdapterMeta,
    BaseModelInfo,
    check_base_model_id,
)
from hub.core.names import AdapterRef
from hub.services.card_rules import card_fields, card_not_applied
from storage.blobs import LocalBlobStore
from storage.catalog import Catalog, NewVersion
from storage.peft_format import (
    ParsedAdapter,
    adapter_tensors,
    peft_config_for,
    read_peft_bytes,
    read_peft_dir,
    write_peft_dir,
)
from storage.safetensors_io import serialize_safetensors


def as_published(adapter: LoraAdapter, config: dict[str, Any]) -> ParsedAdapter:
    """Serialize a computed adapter (merge, revert, training) as PEFT files and re-read them with
    the upload validator: what we register is exactly what `export` + PEFT will later see."""
    weights = serialize_safetensors(adapter_tensors(adapter), metadata={"format": "pt"})
    return read_peft_bytes(json.dumps(config).encode(), weights)


def published_on(
    adapter: LoraAdapter, base: str | None, base_info: BaseModelInfo | None
) -> ParsedAdapter:
    """``as_published`` with the config ``peft_config_for`` writes for a computed adapter on
    ``base`` (merge, revert, generation): the registered base's module names (``base_info``)
    let it target exactly the modules the adapter holds."""
    config = peft_config_for(
        adapter,
        base_model_name_or_path=base,
        base_modules=base_info.module_shapes if base_info is not None else None,
    )
    return as_published(adapter, config)


@dataclass
class AddResult:
    item: AdapterItem
    created: bool
    warnings: list[str] = field(default_factory=list)


@dataclass
class AddPlan:
    """What ``add`` would do with an adapter, every check made and nothing written."""

    name: str
    created: bool  # a new version would be registered (False: these weights are ``existing``)
    new_adapter: bool  # no adapter of this name yet
    existing: AdapterItem | None
    version: NewVersion
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        v = self.version
        return {
            "dry_run": True,
            "name": self.name,
            "created": self.created,
            "new_adapter": self.new_adapter,
            "existing": f"{self.existing.name}@{self.existing.version}" if self.existing else None,
            "digest": v.digest,
            "size_bytes": v.size_bytes,
            "base_model": v.base_model_id,
            "architecture": v.architecture,
            "target_modules": v.target_modules,
            "rank": max(v.module_ranks.values(), default=0),
            "dtype": v.dtype,
            "mergeable": v.mergeable,
            "not_mergeable_reason": v.not_mergeable_reason,
            "warnings": self.warnings,
        }


@dataclass
class GcReport:
    removed_blobs: list[str]
    removed_temp_files: int
    kept_young_blobs: int


class RegistryService:
    def __init__(self, catalog: Catalog, blobs: LocalBlobStore) -> None:
        self.catalog = catalog
        self.blobs = blobs

    # -- adding -------------------------------------------------------------------------------
    def add_path(self, path: Path, meta: AdapterMeta, **kwargs: Any) -> AddResult:
        return self.add_parsed(read_peft_dir(Path(path)), meta, **kwargs)

    def add_bytes(
        self, config_bytes: bytes, weights_bytes: bytes, meta: AdapterMeta, **kwargs: Any
    ) -> AddResult:
        """Register an uploaded ``adapter_config.json`` + ``adapter_model.safetensors`` pair."""
        return self.add_parsed(read_peft_bytes(config_bytes, weights_bytes), meta, **kwargs)

    def plan_add_path(self, path: Path, meta: AdapterMeta, **kwargs: Any) -> AddPlan:
        return self.plan_add(read_peft_dir(Path(path)), meta, **kwargs)

    def plan_add_bytes(
        self, config_bytes: bytes, weights_bytes: bytes, meta: AdapterMeta, **kwargs: Any
    ) -> AddPlan:
        return self.plan_add(read_peft_bytes(config_bytes, weights_bytes), meta, **kwargs)

    def add_parsed(
        self,
        parsed: ParsedAdapter,
        meta: AdapterMeta,
        *,
        parents: Iterable[tuple[int, str, float | None]] = (),
        warn_card: bool = True,
        **kwargs: Any,
    ) -> AddResult:
        """Register ``parsed`` as the next version of ``meta.name``. Weights the adapter already
        holds write nothing; ``warn_card`` then warns when ``meta``'s card differs."""
        with self.blobs.referencing():  # the blob is referenced before an rm can collect it
            new, warnings = self._new_version(parsed, **kwargs)
            item, created = self.catalog.register_version(meta, new, parents=list(parents))
        if not created and warn_card:
            warnings.extend(card_not_applied(meta, item))
        return AddResult(item, created, warnings)

    def plan_add(self, parsed: ParsedAdapter, meta: AdapterMeta, **kwargs: Any) -> AddPlan:
        """``add_parsed`` without the writes: the same checks (the base model's shapes, the
        name, the card), the digest, and whether the weights are already a version of it."""
        new, warnings = self._new_version(parsed, write_blob=False, **kwargs)
        same = self.version_with_digest(meta.name, new.digest)
        if same is not None:
            warnings.extend(card_not_applied(meta, same))
            return AddPlan(meta.name, False, False, same, new, warnings)
        return AddPlan(meta.name, True, not self.exists(meta.name), None, new, warnings)

    def add_many(
        self,
        batch: Sequence[tuple[ParsedAdapter, AdapterMeta, dict[str, Any]]],
        *,
        workers: int = 4,
    ) -> list[AddResult]:
        """Register many adapters with one catalog commit (bulk imports, sync).

        Blobs are written concurrently (their fsyncs overlap), then all rows are committed in a
        single transaction: all or nothing, and one durable commit instead of one per adapter.
        """
        prepared = [self._new_version(parsed, write_blob=False, **kw) for parsed, _, kw in batch]
        with self.blobs.referencing():  # from the blobs' writes to the rows' commit
            with ThreadPoolExecutor(max_workers=workers) as pool:
                jobs = [
                    pool.submit(self.blobs.put_bytes, parsed.weights_bytes, expected=new.digest)
                    for (parsed, _, _), (new, _) in zip(batch, prepared, strict=True)
                ]
                for job in jobs:
                    job.result()  # re-raise the first failure: rows only if all succeed
            rows = [(m, new, ()) for (new, _), (_, m, _) in zip(prepared, batch, strict=True)]
            done = self.catalog.register_versions(rows)
        return [AddResult(i, c, w) for (i, c), (_, w) in zip(done, prepared, strict=True)]

    def _new_version(
        self,
        parsed: ParsedAdapter,
        *,
        source: str = "upload",
        base_model: str | None = None,
        metadata: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        artifact_digest: str | None = None,
        write_blob: bool = True,
        warn_base: bool = True,
    ) -> tuple[NewVersion, list[str]]:
        """Check the adapter against its base model, store its blob (unless the caller batches
        blob writes) and describe the catalog row to write. ``warn_base=False``: a result made
        from catalogued inputs (a merge, a revert), whose adds already warned of an unchecked
        base and whose recipe records it, does not warn again."""
        adapter = parsed.adapter
        base_id = base_model or adapter.base.model_id
        if base_id is not None:
            check_base_model_id(base_id)
        revision, fingerprint, warnings = adapter.base.revision, adapter.base.fingerprint, []
        info = self.catalog.get_base_model(base_id) if base_id else None
        if info is not None:
            self.check_compatible(parsed, info)
            revision = revision or info.revision
            fingerprint = fingerprint or info.fingerprint
        elif warn_base and base_id is None:
            warnings.append("adapter_config.json names no base model; compatibility unchecked")
        elif warn_base:
            warnings.append(f"base model {base_id!r} is not registered; shapes were not checked")
        config = dict(parsed.config)
        if base_id is not None:
            config["base_model_name_or_path"] = base_id
        if write_blob:
            digest = self.blobs.put_bytes(parsed.weights_bytes)
        else:
            digest = hashlib.sha256(parsed.weights_bytes).hexdigest()
        new = NewVersion(
            digest=digest,
            size_bytes=len(parsed.weights_bytes),
            config=config,
            base_model_id=base_id,
            base_model_revision=revision,
            base_model_fingerprint=fingerprint,
            architecture=parsed.architecture or (info.architecture if info else None),
            target_modules=adapter.target_modules,
            module_ranks=adapter.ranks,
            module_shapes=adapter.shapes(),
            dtype=parsed.dtype,
            source=source,
            mergeable=adapter.mergeable,
            not_mergeable_reason=adapter.not_mergeable_reason,
            metadata=metadata or {},
            recipe=recipe,
            artifact_digest=artifact_digest,
        )
        return new, warnings

    @staticmethod
    def check_compatible(parsed: ParsedAdapter, info: BaseModelInfo) -> None:
        RegistryService.check_shapes(parsed.adapter.shapes(), info)

    @staticmethod
    def check_shapes(shapes: Mapping[str, tuple[int, int]], info: BaseModelInfo) -> None:
        """Refuse modules (name -> (d_in, d_out)) that the base model does not have."""
        problems = shape_problems(shapes, info.module_shapes)
        if problems:
            shown = "; ".join(problems[:5]) + (
                f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            )
            raise IncompatibleBaseModelError(
                f"adapter does not fit base model {info.model_id!r}: {shown}",
                problems=problems,
            )

    # -- the card ------------------------------------------------------------------------------
    def edit_card(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Sequence[str] | None = None,
        license: str | None = None,
    ) -> tuple[AdapterItem, bool]:
        """Change adapter ``name``'s description, tags (the whole set; empty clears) or license
        (empty clears); None leaves a field as it is. The card is the adapter's, shared by all
        its versions, so a NAME@VERSION is refused. Returns the latest item and whether
        anything changed."""
        ref = AdapterRef.parse(name)
        if ref.version is not None:
            raise BadInputError(
                f"a card belongs to adapter {ref.name!r}, shared by all its versions: "
                f"pass {ref.name}, not {name}",
                code="card_is_per_adapter",
            )
        return self.catalog.edit_card(ref.name, card_fields(description, tags, license))

    # -- reading ------------------------------------------------------------------------------
    def show(self, ref: AdapterRef) -> AdapterDetail:
        return self.catalog.get_detail(ref.name, ref.version)

    def exists(self, name: str) -> bool:
        """Whether an adapter of this name has a version."""
        try:
            self.catalog.get_item(name)
        except NotFoundError:
            return False
        return True

    def current_digest(self, name: str, version: int | None) -> str | None:
        """The digest ``name@version`` holds now; None when that version is gone (a pinned
        input of a queued job or of a running merge checks it has not changed)."""
        try:
            return self.catalog.get_item(name, version).digest
        except NotFoundError:
            return None

    def version_with_digest(self, name: str, digest: str) -> AdapterItem | None:
        """The version of adapter ``name`` holding these exact weights (digest = sha256 of
        the weights file), which is what ``add`` returns instead of a new version."""
        held = self.catalog.versions_by_digest(digest)
        return next((i for i in held if i.name == name), None)

    def ls(self, **filters: Any) -> tuple[list[AdapterItem], int]:
        return self.catalog.list_items(**filters)

    def load(self, ref: AdapterRef) -> ParsedAdapter:
        """The adapter's weights, digest-verified and re-validated (blobs are never trusted)."""
        return self.load_detail(self.show(ref))

    def load_detail(self, detail: AdapterDetail) -> ParsedAdapter:
        """``load`` for a version already looked up (saves a catalog query per input)."""
        if detail.source == "mixture":  # a gate over experts, not LoRA weights (mixture_store)
            from hub.services.mixture_store import not_a_lora

            raise not_a_lora(detail)
        weights = self.blobs.get(detail.digest)
        return read_peft_bytes(json.dumps(detail.config).encode(), weights)

    def file_bytes(self, ref: AdapterRef, filename: str) -> bytes:
        """One PEFT file of a version: ``adapter_config.json`` or the digest-verified
        ``adapter_model.safetensors`` (downloads)."""
        detail = self.show(ref)
        if filename == "adapter_config.json":
            return json.dumps(detail.config, indent=2).encode()
        if filename == "adapter_model.safetensors":
            return self.blobs.get(detail.digest)
        raise NotFoundError(f"an adapter has no file {filename!r}", filename=filename)

    def export(self, ref: AdapterRef, out_dir: Path) -> Path:
        """Write a PEFT directory that ``PeftModel.from_pretrained`` loads."""
        detail = self.show(ref)
        try:
            if detail.source == "mixture":  # experts + gate directory (mixture_store)
                from hub.services.mixture_store import export_mixture

                return export_mixture(self, detail, Path(out_dir))
            weights = self.blobs.get(detail.digest)
            parsed = read_peft_bytes(json.dumps(detail.config).encode(), weights)
            write_peft_dir(parsed.adapter, detail.config, Path(out_dir), weights_bytes=weights)
        except OSError as exc:  # a file in the way, no permission, a name too long...
            raise BadInputError(
                f"cannot write the export to {str(out_dir)[:200]!r}: {exc.strerror or exc}",
                code="export_destination",
            ) from None
        return Path(out_dir)

    # -- removing -----------------------------------------------------------------------------
    def rm(self, ref: AdapterRef) -> list[str]:
        """Delete catalog rows first (committed), then the blobs nothing references any more."""
        from hub.services.mixture_store import check_removable

        check_removable(self, ref.name, ref.version)  # an expert in use would leave it dangling
        unreferenced = self.catalog.delete(ref.name, ref.version)
        with self.blobs.collecting():  # no add is between storing a blob and its row
            still_used = self.catalog.referenced_digests()
            for digest in unreferenced:
                if digest not in still_used:
                    self.blobs.delete(digest)
        return unreferenced

    def gc(self, grace_seconds: float) -> GcReport:
        """Remove blobs no version references and stale temp files. Blobs younger than
        ``grace_seconds`` are kept: a concurrent ``add`` may have written one and not yet
        committed its catalog row."""
        if not math.isfinite(grace_seconds) or grace_seconds < 0:
            # NaN compares false and would make every young blob fair game
            raise BadInputError(
                f"grace must be a finite number of seconds >= 0, not {grace_seconds}",
                code="bad_grace",
            )
        removed, young = [], 0
        with self.blobs.collecting():
            referenced = self.catalog.referenced_digests()
            for digest in list(self.blobs.iter_digests()):
                if digest in referenced:
                    continue
                if self.blobs.age_seconds(digest) < grace_seconds:
                    young += 1
                    continue
                self.blobs.delete(digest)
                removed.append(digest)
        temp = self.blobs.clean_temp(older_than_s=grace_seconds)
        return GcReport(removed, temp, young)

    def verify(self) -> list[str]:
        """Digests of referenced blobs that are missing or corrupted (empty = healthy)."""
        bad = []
        for digest in sorted(self.catalog.referenced_digests()):
            try:
                self.blobs.get(digest)
            except HubError:
                bad.append(digest)
        return bad

    # -- base models --------------------------------------------------------------------------
    def register_base_model(
        self,
        model_id: str,
        config: dict[str, Any],
        *,
        revision: str | None = None,
        fingerprint: str | None = None,
    ) -> BaseModelInfo:
        model_id = check_base_model_id(model_id)
        shapes = module_shapes(config)  # validates the config before anything else reads it
        info = BaseModelInfo(
            model_id=model_id,
            revision=revision,
            fingerprint=fingerprint,
            architecture=(config.get("architectures") or [config.get("model_type")])[0],
            module_shapes=shapes,
        )
        self.catalog.register_base_model(info)
        return info
