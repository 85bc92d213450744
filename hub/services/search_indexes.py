"""The search indexes as derived data that follows the catalog (one vector per adapter).

A :class:`IndexSide` is one kind of vector — card texts or weight embeddings — for the latest
version of every adapter, keyed by catalog version id. Next to the FAISS files it keeps an
entries file: per version id, the version's identity (``name@digest``, so a row id that SQLite
reuses after a delete never passes for the old version) and, for cards, the card hash.

Keeping up is incremental: :meth:`IndexSide.apply` gets the catalog's latest versions and
embeds only what is new or changed. A new version whose card hash equals its predecessor's
reuses the stored vector: unchanged cards are never re-embedded. Saving a large index takes
seconds, so saves run in one background saver thread, coalesced; searches never wait for a
save, and a new adapter is searchable as soon as it is added to the in-memory index.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import HubError
from hub.runtime.files import atomic_write, file_lock
from retrieval.index import VectorIndex
from storage.catalog.search_queries import LatestVersion

log = logging.getLogger(__name__)
ENTRIES_FORMAT = 1
# Vectors for these (new) versions: returns (vectors (n, dim), card hashes or None). A row of
# NaN marks a version that cannot be embedded (left out of the index, retried on change).
EmbedFn = Callable[[list[LatestVersion]], tuple[np.ndarray, list[str] | None]]
HashFn = Callable[[list[LatestVersion]], list[str]]


class IndexSide:
    """One index file set ``<dir>/<kind>.faiss*`` plus ``<kind>.faiss.entries.json``."""

    def __init__(
        self,
        kind: str,
        path: Path,
        embedder_id: str,
        dim: int,
        index_params: dict[str, Any],
    ) -> None:
        self.kind = kind
        self.path = path
        self.embedder_id = embedder_id
        self.dim = dim
        self.index_params = index_params
        self.index = VectorIndex(dim, embedder_id, **index_params)
        self.keys: dict[int, str] = {}  # version id -> identity (key_of) of the vector stored
        self.hashes: dict[int, str] = {}  # version id -> card hash (text side only)
        self.unsaved_hashes: dict[int, str] = {}  # added since the last save
        self.by_name: dict[str, int] = {}  # adapter name -> its indexed version id
        self._lock = threading.Lock()  # one apply at a time per side

    # -- persistence ------------------------------------------------------------------------
    @property
    def entries_path(self) -> Path:
        return self.path.with_name(self.path.name + ".entries.json")

    def load(self) -> bool:
        """Load the saved files if present (False when there are none). Entries that disagree
        with the index (a crash between the two writes) are dropped and re-embedded later."""
        if not self.path.exists():
            return False
        with _files_locked(self.path, exclusive=False):  # never half of another process' save
            index = VectorIndex.load(self.path, self.embedder_id, self.dim)
            try:
                raw = json.loads(self.entries_path.read_text())
                keys = {int(i): str(k) for i, k in raw["keys"].items()}
                hashes = {int(i): str(h) for i, h in raw.get("hashes", {}).items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                keys, hashes = {}, {}  # unknown identities: every vector is re-checked
        indexed = {int(i) for i in index.ids()}
        orphans = indexed - set(keys)
        if orphans:
            index.remove(sorted(orphans))
        self.index = index
        self.keys = {i: k for i, k in keys.items() if i in indexed}
        self.hashes = {i: h for i, h in hashes.items() if i in self.keys}
        self.by_name = {_name(k): i for i, k in self.keys.items()}
        return True

    def save(self) -> dict[int, str]:
        """Index files first, entries last (a reader pairs them; a mismatch heals on load).
        Returns the card hashes this save made durable for the first time."""
        with _files_locked(self.path, exclusive=True):
            with self._lock:  # a consistent copy; applies wait for it, not for the writing
                keys, hashes = dict(self.keys), dict(self.hashes)
                fresh, self.unsaved_hashes = self.unsaved_hashes, {}
                snapshot = self.index.snapshot()
            doc = {"format": ENTRIES_FORMAT, "embedder_id": self.embedder_id, "keys": keys}
            if hashes:
                doc["hashes"] = hashes
            try:
                snapshot.write(self.path)
                atomic_write(self.entries_path, json.dumps(doc).encode())
            except BaseException:  # not durable after all: the next save writes them again
                with self._lock:
                    self.unsaved_hashes = {**fresh, **self.unsaved_hashes}
                raise
        return {i: h for i, h in fresh.items() if i in keys}

    # -- following the catalog --------------------------------------------------------------
    def key_of(self, v: LatestVersion) -> str:
        """What a stored vector was made from: the weights (``name@digest``) and, for card
        texts, the card's edit revision too, so an edited card is embedded again."""
        return v.card_key if self.kind == "text" else v.key

    def apply(
        self, latest: Sequence[LatestVersion], embed: EmbedFn, card_hash: HashFn | None = None
    ) -> dict[str, int]:
        """Make the index hold exactly ``latest``. Returns counts: added, reused, removed."""
        with self._lock:
            want = {v.id: self.key_of(v) for v in latest}
            moved = self._rows_not_embedded(latest)
            stale = [i for i, key in self.keys.items() if want.get(i) != key or i in moved]
            new = [v for v in latest if self.keys.get(v.id) != want[v.id] or v.id in moved]
            return self._replace(new, stale, embed, card_hash)

    def _rows_not_embedded(self, latest: Sequence[LatestVersion]) -> set[int]:
        """Text side: rows whose catalog card hash is not the one this index saved for their
        id. The catalog records the hash once a save is durable, so a row that lacks it, with
        the key unchanged, is a new row under a reused id (`rm x`, then `add` of the same
        weights as x with another card): its vector is the old card's. Hashes still being
        saved are not counted."""
        if self.kind != "text":
            return set()
        return {
            v.id
            for v in latest
            if v.id in self.hashes
            and v.id not in self.unsaved_hashes
            and v.text_hash != self.hashes[v.id]
        }

    def apply_new(
        self, fresh: Sequence[LatestVersion], embed: EmbedFn, card_hash: HashFn | None = None
    ) -> dict[str, int]:
        """Only versions were added or cards edited since the last sync (no deletes): each one
        replaces its adapter's vector unless that was made from the same thing. Costs O(fresh),
        not O(catalog): a 10^5 catalog is not listed."""
        with self._lock:
            newest: dict[str, LatestVersion] = {}
            for v in sorted(fresh, key=lambda v: v.id):
                newest[v.name] = v  # several new versions of one adapter: the last one wins
            new = [v for v in newest.values() if self.keys.get(v.id) != self.key_of(v)]
            stale = [self.by_name[v.name] for v in new if v.name in self.by_name]
            return self._replace(new, stale, embed, card_hash)

    def _replace(
        self,
        new: list[LatestVersion],
        stale: list[int],
        embed: EmbedFn,
        card_hash: HashFn | None,
    ) -> dict[str, int]:
        reused = self._reuse(new, stale, card_hash) if new and card_hash else {}
        todo = [v for v in new if v.id not in reused]
        vecs, hashes = embed(todo) if todo else (np.zeros((0, self.dim), np.float32), [])
        ok = [bool(np.isfinite(row).all()) for row in vecs]  # a NaN row: cannot embed
        if not all(ok):
            todo = [v for v, good in zip(todo, ok, strict=True) if good]
            hashes = [h for h, good in zip(hashes, ok, strict=True) if good] if hashes else []
            vecs = vecs[ok]
        if stale:
            self.index.remove(stale)
            for i in stale:
                key = self.keys.pop(i, None)
                self.hashes.pop(i, None)
                if key is not None and self.by_name.get(_name(key)) == i:
                    del self.by_name[_name(key)]
        self._add(todo, vecs, hashes)
        if reused:
            again = [v for v in new if v.id in reused]
            vecs = np.stack([reused[v.id][0] for v in again])
            self._add(again, vecs, [reused[v.id][1] for v in again])
        return {"added": len(todo), "reused": len(reused), "removed": len(stale)}

    def _add(self, versions: list[LatestVersion], vecs: np.ndarray, hashes) -> None:
        if not versions:
            return
        self.index.add([v.id for v in versions], vecs)
        for pos, v in enumerate(versions):
            self.keys[v.id] = self.key_of(v)
            self.by_name[v.name] = v.id
            if hashes:
                self.hashes[v.id] = self.unsaved_hashes[v.id] = hashes[pos]

    def _reuse(
        self, new: list[LatestVersion], stale: list[int], card_hash: HashFn
    ) -> dict[int, tuple[np.ndarray, str]]:
        """New versions whose card hash equals the stale vector's of the same adapter name."""
        by_name = {}
        for i in stale:
            if i in self.hashes and i in self.index:
                by_name[_name(self.keys[i])] = i
        candidates = [v for v in new if v.name in by_name]
        if not candidates:
            return {}
        out = {}
        for v, h in zip(candidates, card_hash(candidates), strict=True):
            old = by_name[v.name]
            if self.hashes[old] == h:
                out[v.id] = (self.index.vectors([old])[0], h)
        return out

    @property
    def count(self) -> int:
        return self.index.count


def _name(key: str) -> str:
    return key.rsplit("@", 1)[0]


def _files_locked(path: Path, exclusive: bool) -> contextlib.AbstractContextManager[None]:
    """Advisory lock on ``<path>.lock`` between processes (a server saving while a CLI
    loads): a reader never pairs a new index file with an old sidecar."""
    return file_lock(path.with_name(path.name + ".lock"), exclusive)


class BackgroundSaver:
    """Saves sides off the query path: one thread, coalesced requests. The thread is not a
    daemon, so a CLI process finishes writing the index before it exits."""

    def __init__(self, on_saved: Callable[[IndexSide, dict[int, str]], None] | None = None):
        self._pending: dict[str, IndexSide] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._on_saved = on_saved
        self.errors: list[BaseException] = []

    def request(self, side: IndexSide) -> None:
        with self._cond:
            self._pending[side.kind] = side
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="index-saver")
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                kind, side = next(iter(self._pending.items()))
                del self._pending[kind]
            try:
                fresh = side.save()
                if self._on_saved:
                    self._on_saved(side, fresh)
            except (OSError, HubError) as exc:  # derived data: written again at the next change
                log.warning("saving the %s index failed: %s", side.kind, exc)
                self.errors.append(exc)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every requested save is written."""
        with self._cond:
            self._cond.wait_for(lambda: self._thread is None, timeout)
