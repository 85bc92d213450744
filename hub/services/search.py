"""Find adapters for a task: text, weight and hybrid search over the catalog (AutoLoRA-style).

Indexes are derived data under ``<home>/index``, one vector per adapter (its latest version):
``text.faiss`` (card embeddings), and, once a weight encoder is trained, ``weights.faiss``
(weight embeddings in the text space) and ``features.faiss`` (weight features, for
``similar``), plus ``encoder/``. They follow the catalog lazily: every query first compares a
cheap catalog fingerprint and, only when it changed, embeds the new latest versions and drops
the replaced or deleted ones (see ``search_indexes.py``), so a new adapter is searchable at once
and nothing needs a hook in every writer. ``reindex`` rebuilds off to the side and swaps, so
queries keep being answered meanwhile.

Semantics: results are each adapter's latest version; filters (``base_model``, ``tag``,
``source``) apply to it, in the catalog. An empty catalog gives an empty result, not an error.
A filter value that no adapter has is an unknown name (exit 2 / HTTP 400), listing known ones.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import BadInputError, UnknownNameError
from hub.core.models import AdapterItem
from hub.core.names import AdapterRef
from hub.services.registry import RegistryService
from hub.services.search_indexes import BackgroundSaver, IndexSide
from storage.catalog.search_queries import LatestVersion

log = logging.getLogger(__name__)
INDEX_PARAMS: dict[str, Any] = {"backend": "auto", "ann_threshold": 20_000, "ann_backend": "hnsw"}


@dataclass
class SearchResult:
    item: AdapterItem
    score: float
    text_score: float | None
    weight_score: float | None
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.item.model_dump(mode="json"),
            "score": self.score,
            "text_score": self.text_score,
            "weight_score": self.weight_score,
            "why": self.why,
        }


class SearchService:
    def __init__(
        self,
        registry: RegistryService,
        index_dir: Path,
        embedder: str = "minilm",
        device: str | None = None,
    ):
        self.registry = registry
        self.index_dir = Path(index_dir)
        self.embedder_name = embedder
        self.device = device
        self._cards: Any = None
        self._encoder: Any = None
        self._sides: dict[str, IndexSide] = {}  # kept in memory between queries (a server)
        self._fingerprint: tuple[Any, ...] | None = None
        self._allowed_cache: dict[tuple[Any, ...], frozenset[int]] = {}  # filters -> ids
        self._lock = threading.Lock()  # one sync at a time; queries share the sides
        self._rebuild_lock = threading.Lock()
        self.saver = BackgroundSaver(on_saved=self._mirror_text_hashes)

    # -- components -----------------------------------------------------------------------
    @property
    def cards(self) -> Any:
        """The card embedder (text model + field weights)."""
        if self._cards is None:
            from retrieval.cards import CardEmbedder
            from retrieval.embedders import get_embedder

            kwargs = {} if self.embedder_name == "hash" else {"device": self._device()}
            self._cards = CardEmbedder(get_embedder(self.embedder_name, **kwargs))
        return self._cards

    def _device(self) -> str:
        if self.device in (None, "auto"):
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return str(self.device)

    @property
    def encoder(self) -> Any:
        """The trained weight encoder, or None before `loradex encoder train`."""
        if self._encoder is None and (self.index_dir / "encoder").is_dir():
            from retrieval.weight_encoder import WeightEncoder

            self._encoder = WeightEncoder.load(self.index_dir / "encoder")
        return self._encoder

    def _new_sides(self, load: bool) -> dict[str, IndexSide]:
        specs = [("text", self.cards.embedder_id, self.cards.dim)]
        if self.encoder is not None:
            specs.append(("weights", self.encoder.embedder_id, self.encoder.config.out_dim))
            specs.append(("features", self.encoder.feature_id, self.encoder.feature_dim))
        sides = {}
        for kind, embedder_id, dim in specs:
            side = IndexSide(kind, self.index_dir / f"{kind}.faiss", embedder_id, dim, INDEX_PARAMS)
            if load:
                side.load()
            sides[kind] = side
        return sides

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
            self._fingerprint = fingerprint
            return self._report(counts)

    def _only_added(
        self, before: tuple[Any, ...] | None, now: tuple[Any, ...]
    ) -> list[LatestVersion] | None:
        """The versions added since ``before`` when nothing was deleted meanwhile (the common
        case: one new adapter), else None (then the full latest list is compared)."""
        if before is None or before[1] is None or now[0] < before[0]:
            return None
        catalog = self.registry.catalog
        if catalog.version_identity(before[1]) != tuple(before[1:]):
            return None  # the newest row then is gone (or its id was reused)
        added = catalog.versions_after(before[1])
        return added if before[0] + len(added) == now[0] else None

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
        self.saver.flush()
        return self._report(counts)

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
        than it was trained on) gets a NaN row: searchable by its card only."""
        encode = self.encoder.embed_many if kind == "weights" else self.encoder.feature_vectors
        dim = self.encoder.config.out_dim if kind == "weights" else self.encoder.feature_dim

        def embed(versions: list[LatestVersion]) -> tuple[np.ndarray, None]:
            rows = []
            for v in versions:
                try:
                    rows.append(np.asarray(encode([self._adapter(v.id)]), np.float32)[0])
                except BadInputError as exc:
                    log.info("%s: no %s vector for version %d: %s", kind, kind, v.id, exc)
                    rows.append(np.full(dim, np.nan, np.float32))
            return np.stack(rows) if rows else np.zeros((0, dim), np.float32), None

        return embed

    def _adapter(self, version_id: int) -> Any:
        item = self.registry.catalog.items_by_ids([version_id])[version_id]
        return self.registry.load(AdapterRef(item.name, item.version)).adapter

    def _mirror_text_hashes(self, side: IndexSide, fresh: dict[int, str]) -> None:
        """After a text index is durably saved, record the new card hashes in the catalog."""
        if side.kind == "text":
            self.registry.catalog.set_text_hashes(fresh)

    # -- queries --------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: str = "hybrid",
        base_model: str | None = None,
        tag: str | None = None,
        source: str | None = None,
    ) -> list[SearchResult]:
        from retrieval.search import SearchEngine, check_request

        check_request(query, k, mode)  # bad input fails fast, before any index work
        self.sync()
        sides = self._sides
        if sides["text"].count == 0:
            return []  # an empty catalog: nothing to find, not an error
        if mode == "weights" and "weights" not in sides:
            raise BadInputError(
                "weight search needs a trained weight encoder: run `loradex encoder train`",
                code="encoder_missing",
            )
        allowed = self._allowed(base_model, tag, source)
        weights = sides["weights"].index if "weights" in sides else None
        engine = SearchEngine(self.cards.embed_query, sides["text"].index, weights)
        return self._results(engine.search(query, k, mode, allowed))

    def similar(self, ref: AdapterRef, *, k: int = 10) -> list[SearchResult]:
        """Nearest adapters to ``ref`` in weight-feature space (``ref`` itself excluded)."""
        from retrieval.search import SearchEngine, check_k

        check_k(k)
        detail = self.registry.show(ref)  # unknown name -> not found, before any index work
        self.sync()
        if "features" not in self._sides:
            raise BadInputError(
                "`similar` compares adapters' weights: run `loradex encoder train` first",
                code="encoder_missing",
            )
        index = self._sides["features"].index
        own = self.registry.catalog.version_id(detail.name, detail.version)
        vec = index.vectors([own]) if own in index else self._features_of(detail)
        engine = SearchEngine(self.cards.embed_query, None, index)
        return self._results(engine.similar_to(vec, k, exclude={own}))

    def _features_of(self, detail: Any) -> np.ndarray:
        """Weight features of a version that is not indexed (an older version)."""
        adapter = self.registry.load(AdapterRef(detail.name, detail.version)).adapter
        return self.encoder.feature_vectors([adapter])

    def _allowed(self, base_model: str | None, tag: str | None, source: str | None):
        """Latest-version ids passing the filters, or None when no filter is given."""
        filters = {"base_model": base_model, "tag": tag, "source": source}
        given = {f: v for f, v in filters.items() if v is not None}
        if not given:
            return None
        key = (self._fingerprint, tuple(sorted(given.items())))
        allowed = self._allowed_cache.get(key)
        if allowed is None:  # a catalog scan (JSON tags): kept until the catalog changes
            allowed = frozenset(self.registry.catalog.latest_version_ids(**given))
            if len(self._allowed_cache) >= 64:
                self._allowed_cache.pop(next(iter(self._allowed_cache)))
            self._allowed_cache[key] = allowed
        if not allowed:
            self._check_known(given)
        return allowed

    def _check_known(self, given: dict[str, str]) -> None:
        for field, value in given.items():
            known = self.registry.catalog.known_filter_values(field)
            if value not in known:
                shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
                raise UnknownNameError(
                    f"no adapter has {field.replace('_', ' ')} {value!r}; known: {shown or 'none'}",
                    code=f"unknown_{field}",
                    known=known[:100],
                )

    def _results(self, hits: list[Any]) -> list[SearchResult]:
        items = self.registry.catalog.items_by_ids([h.id for h in hits])
        return [
            SearchResult(items[h.id], h.score, h.text_score, h.weight_score, h.why)
            for h in hits
            if h.id in items
        ]

    # -- the weight encoder ---------------------------------------------------------------
    def train_encoder(self) -> dict[str, Any]:
        """Train on every adapter with a description (zoo adapters bring three paraphrases)."""
        from retrieval.weight_encoder import train_encoder

        items, _ = self.registry.ls(limit=10**9)
        described = [i for i in items if i.description.strip()]
        texts = [i.metadata.get("descriptions") or [i.description] for i in described]
        adapters = [self.registry.load(AdapterRef(i.name, i.version)).adapter for i in described]
        embedder = self.cards.embedder
        embeddings = [embedder.embed(t) for t in texts]
        encoder, losses = train_encoder(adapters, embeddings, embedder.embedder_id)
        encoder.save(self.index_dir / "encoder")
        with self._lock:
            self._encoder, self._sides, self._fingerprint = None, {}, None
            for kind in ("weights", "features"):  # built for the old encoder
                (self.index_dir / f"{kind}.faiss").unlink(missing_ok=True)
        report = self.sync()
        self.saver.flush()
        return {
            "version": encoder.version,
            "adapters": len(adapters),
            "final_loss": float(losses[-1]) if losses else None,
            **report,
        }


def _seed_from(side: IndexSide, old: IndexSide | None) -> None:
    """Copy ``old``'s vectors and entries into a fresh side (same embedder only)."""
    if old is None or old.embedder_id != side.embedder_id or not old.keys:
        return
    ids = [i for i in old.keys if i in old.index]
    if ids:
        side.index.add(ids, old.index.vectors(ids))
        side.keys = {i: old.keys[i] for i in ids}
        side.hashes = {i: old.hashes[i] for i in ids if i in old.hashes}
