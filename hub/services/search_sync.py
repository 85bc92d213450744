"""Keeping the search indexes in step with the catalog: the index-maintenance half of
:class:`hub.services.search.SearchService` (which adds the query half).

Every query first calls ``refresh``; a fingerprint comparison decides whether anything moved;
when only additions happened just the new latest versions are embedded, otherwise the full list
of latest versions is compared. ``sync(rebuild=True)`` builds fresh sides off to the side and
swaps them in.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import BadInputError, StorageError
from hub.services.registry import RegistryService
from hub.services.search_freshness import CatalogWatch
from hub.services.search_indexes import IndexSide
from hub.services.search_results import Generation
from storage.catalog.search_queries import LatestVersion

log = logging.getLogger(__name__)


class IndexSync:
    """Needs, from the subclass: the attributes below, ``cards``, ``encoder``, ``saver`` and
    ``_new_sides``."""

    registry: RegistryService
    index_dir: Path
    saver: Any
    _sides: dict[str, IndexSide]
    _fingerprint: tuple[Any, ...] | None
    _gen: Generation
    _watch: CatalogWatch
    _lock: threading.Lock
    _rebuild_lock: threading.Lock
    cards: Any
    encoder: Any

    def _new_sides(self, load: bool) -> dict[str, IndexSide]:
        raise NotImplementedError

    # -- keeping the indexes in step with the catalog -------------------------------------------
    def sync(self, *, rebuild: bool = False) -> dict[str, int]:
        """Embed what the catalog's latest versions need; drop what they no longer are.
        ``rebuild=True`` builds fresh indexes off to the side (reusing stored vectors whose
        card/version did not change) and swaps them in; queries keep using the old ones."""
        if rebuild:
            return self._rebuild()
        with self._lock:
            fingerprint = self.registry.catalog.versions_fingerprint()
            if fingerprint == self._fingerprint and self._sides:
                return self._report({})
            if not self._sides:
                self._sides = self._new_sides(load=True)
            fresh = self._only_added(self._fingerprint, fingerprint)
            if fresh is not None:
                counts = self._apply(self._sides, fresh, delta=True)
            else:
                counts = self._apply(self._sides, self.registry.catalog.latest_versions())
            self._fingerprint, self._gen = fingerprint, Generation(fingerprint)
            return self._report(counts)

    def refresh(self) -> None:
        """``sync`` when the catalog may have changed: always after this process wrote to it,
        else at most every ``refresh_interval_s`` (writes by other processes)."""
        if self._sides and not self._watch.due():
            return
        self._watch.checked()  # before the sync: a write landing meanwhile is seen next time
        self.sync()

    def _only_added(
        self, before: tuple[Any, ...] | None, now: tuple[Any, ...]
    ) -> list[LatestVersion] | None:
        """The versions added and the adapters whose card was edited since ``before``, when
        nothing was deleted meanwhile (the common case: one new adapter, one edit), else None
        (then the full latest list is compared). A fingerprint is (count, newest row's id,
        adapter id and digest, card revision, newest row's creation time)."""
        if before is None or before[1] is None or now[0] < before[0]:
            return None
        catalog = self.registry.catalog
        if catalog.version_identity(before[1]) != (*before[1:4], before[5]):
            return None  # the newest row then is gone (or its id was reused)
        newest_moved = (*now[:4], now[5]) != (*before[:4], before[5])
        added = catalog.versions_after(before[1]) if newest_moved else []
        if before[0] + len(added) != now[0]:
            return None
        edited = catalog.cards_edited_since(before[4]) if now[4] != before[4] else []
        return added + edited

    def _apply(
        self, sides: dict[str, IndexSide], latest: list[LatestVersion], delta: bool = False
    ) -> dict[str, Any]:
        """``latest``: every latest version, or with ``delta`` only the versions added."""
        counts = {}
        for kind, side in sides.items():
            apply = side.apply_new if delta else side.apply
            if kind == "text":
                counts[kind] = apply(latest, self._embed_cards, self._card_hashes)
            else:
                counts[kind] = apply(latest, self._weight_embedder(kind))
            if any(counts[kind].values()) or not side.path.exists():
                self.saver.request(side)
            if side.index.outgrown():
                side.index.rebuild(background=True)  # grew past the threshold: switch, off-lock
        return counts

    def _rebuild(self) -> dict[str, int]:
        self.check_index_dir()
        saves_before = len(self.saver.errors)
        with self._rebuild_lock:
            with self._lock:
                old = self._sides or self._loadable_sides()
                fingerprint = self.registry.catalog.versions_fingerprint()
            latest = self.registry.catalog.latest_versions()
            fresh = self._new_sides(load=False)
            for kind, side in fresh.items():
                _seed_from(side, old.get(kind))  # reuse vectors: unchanged cards stay put
            counts = self._apply(fresh, latest)
            for side in fresh.values():
                side.index.rebuild()  # compact + pick the backend for the final size
                self.saver.request(side)
            with self._lock:
                self._sides, self._fingerprint = fresh, fingerprint
                self._gen = Generation(fingerprint)
        self.flush_saves(saves_before)
        return self._report(counts)

    def check_index_dir(self) -> None:
        """Before a command whose job is writing the indexes: a file where the index folder
        belongs is a damaged data dir, said by name rather than as an OS error mid-write."""
        if self.index_dir.exists() and not self.index_dir.is_dir():
            raise StorageError(
                f"{self.index_dir} is a file where the search index folder belongs: move it "
                "away, then run `loradex reindex`",
                code="bad_index_dir",
            )
        for kind in ("text", "weights", "features"):
            path = self.index_dir / f"{kind}.faiss"
            if path.is_dir():  # replacing or unlinking it would fail mid-command
                raise StorageError(
                    f"{path} is a folder where an index file belongs: move it away, then run "
                    "the command again",
                    code="bad_index_dir",
                )

    def flush_saves(self, errors_before: int) -> None:
        """Wait for the index saves; a save that failed since ``errors_before`` is an error of
        the command that asked for it (a query only logs it: it answered from memory)."""
        self.saver.flush()
        failed = self.saver.errors[errors_before:]
        if failed:
            raise StorageError(
                f"the search index could not be saved: {failed[0]}; fix the cause (disk "
                "space, permissions), then run `loradex reindex`",
                code="index_save_failed",
            )

    def _loadable_sides(self) -> dict[str, IndexSide]:
        """Saved sides that still load (a corrupted or foreign index is simply not reused)."""
        from retrieval.index import IndexMismatchError

        sides = self._new_sides(load=False)
        for kind in list(sides):
            try:
                sides[kind].load()
            except IndexMismatchError:
                del sides[kind]
        return sides

    def _report(self, counts: dict[str, Any]) -> dict[str, int]:
        report = {}
        for kind, side in self._sides.items():
            c = counts.get(kind, {})
            report[f"{kind}_added"] = c.get("added", 0)
            report[f"{kind}_reused"] = c.get("reused", 0)
            report[f"{kind}_removed"] = c.get("removed", 0)
            report[f"{kind}_count"] = side.count
        return report

    # -- embedding --------------------------------------------------------------------------
    def _card_list(self, versions: list[LatestVersion]) -> list[Any]:
        from retrieval.cards import Card

        items = self.registry.catalog.items_by_ids([v.id for v in versions])
        return [
            Card.of(i.name, i.description, i.tags, i.metadata.get("examples") or ())
            for i in (items[v.id] for v in versions)
        ]

    def _card_hashes(self, versions: list[LatestVersion]) -> list[str]:
        return [self.cards.card_hash(c) for c in self._card_list(versions)]

    def _embed_cards(self, versions: list[LatestVersion]) -> tuple[np.ndarray, list[str]]:
        cards = self._card_list(versions)
        return self.cards.embed(cards), [self.cards.card_hash(c) for c in cards]

    def _weight_embedder(self, kind: str) -> Any:
        """Weight or feature vectors; an adapter the encoder cannot read (another architecture
        than it was trained on) or whose blob is missing or damaged gets a NaN row: searchable
        by its card only, and tried again at the next full sync (``reindex``). One bad blob must
        not take text search and every other adapter's weight vector down with it."""
        encode = self.encoder.embed_many if kind == "weights" else self.encoder.feature_vectors
        dim = self.encoder.config.out_dim if kind == "weights" else self.encoder.feature_dim

        def embed(versions: list[LatestVersion]) -> tuple[np.ndarray, None]:
            rows = []
            for v in versions:
                try:
                    rows.append(mean_row(np.asarray(encode(self._members(v.id)), np.float32)))
                except BadInputError as exc:
                    log.info("%s: no %s vector for version %d: %s", kind, kind, v.id, exc)
                    rows.append(np.full(dim, np.nan, np.float32))
                except (StorageError, ValueError) as exc:  # a damaged store, or numerics on
                    # weights no encoder test foresaw: say so, and keep every other adapter
                    log.warning("no %s vector for %s: %s", kind, v.name, exc)
                    rows.append(np.full(dim, np.nan, np.float32))
            return np.stack(rows) if rows else np.zeros((0, dim), np.float32), None

        return embed

    def _members(self, version_id: int) -> list[Any]:
        """The LoRA adapters standing for a version in weight space: itself, or a mixture's
        experts (a mixture has no LoRA weights of its own: it sits at their mean)."""
        from hub.services.mixture_store import lora_members

        item = self.registry.catalog.items_by_ids([version_id])[version_id]
        return lora_members(self.registry, item)

    def _mirror_text_hashes(self, side: IndexSide, fresh: dict[int, str]) -> None:
        """After a text index is durably saved, record the new card hashes in the catalog."""
        if side.kind == "text":
            self.registry.catalog.set_text_hashes(fresh)


def _seed_from(side: IndexSide, old: IndexSide | None) -> None:
    """Copy ``old``'s vectors and entries into a fresh side (same embedder only)."""
    if old is None or old.embedder_id != side.embedder_id or not old.keys:
        return
    ids = [i for i in old.keys if i in old.index]
    if ids:
        side.index.add(ids, old.index.vectors(ids))
        side.keys = {i: old.keys[i] for i in ids}
        side.hashes = {i: old.hashes[i] for i in ids if i in old.hashes}


def mean_row(vectors: np.ndarray) -> np.ndarray:
    """One row for a version: its own vector, or the re-normalised mean of a mixture's experts."""
    if len(vectors) == 1:
        return vectors[0]
    row = vectors.mean(axis=0)
    return row / max(float(np.linalg.norm(row)), 1e-12)
