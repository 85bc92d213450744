"""Find adapters for a task: text, weight and hybrid search over the catalog (AutoLoRA-style).

Indexes are derived data under ``<home>/index``: ``text.faiss`` (card embeddings), and, once a
weight encoder is trained, ``weights.faiss`` (weight embeddings) and ``encoder/``. They follow
the catalog lazily: every search first syncs — versions added since are embedded and added,
deleted ones removed — so a new adapter is searchable right away and nothing needs a hook in
every writer. ``reindex`` rebuilds from scratch. Metadata filters are applied in the catalog and
passed to the index as the allowed id set.

Serving many queries (the API): the sync is skipped while the catalog provably did not change
(:mod:`hub.services.search_freshness`: this process wrote nothing and a one-query fingerprint
checked within ``refresh_interval_s`` is unchanged); per catalog generation the allowed-id sets
and the result items are cached; query embeddings go through an LRU cache that also batches
concurrent misses into one model call (:class:`retrieval.query_embedder.QueryEmbedder`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import BadInputError
from hub.core.models import AdapterItem
from hub.core.names import AdapterRef
from hub.services.registry import RegistryService
from hub.services.search_freshness import CatalogWatch


@dataclass
class SearchResult:
    item: AdapterItem
    score: float
    text_score: float | None
    weight_score: float | None
    why: str
    item_doc: dict[str, Any] | None = None  # item.model_dump(mode="json"), cached per generation
    item_json: str | None = None  # that doc as compact JSON, cached too

    def to_dict(self) -> dict[str, Any]:
        return {
            **(self.item_doc or self.item.model_dump(mode="json")),
            **self._scores(),
        }

    def to_json(self) -> str:
        """``json.dumps(self.to_dict(), separators=(",", ":"))``, without re-encoding the
        item (most of the bytes) on every query."""
        item = self.item_json or _compact(self.item_doc or self.item.model_dump(mode="json"))
        return f"{item[:-1]},{_compact(self._scores())[1:]}"

    def _scores(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "text_score": self.text_score,
            "weight_score": self.weight_score,
            "why": self.why,
        }


def _compact(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


ITEM_CACHE_SIZE = 8192  # result items kept per catalog generation (a few KB each)


def _evict_oldest(cache: dict[Any, Any], keep: int) -> None:
    """Drop the oldest entries until at most ``keep`` remain; tolerates concurrent writers
    (request threads share the cache; a lost race only skips an eviction)."""
    while len(cache) > keep:
        try:
            cache.pop(next(iter(cache)), None)
        except (StopIteration, RuntimeError):
            return


class _NeedsIO(Exception):
    """Inside ``search_cached``: the answer needs the catalog or the model."""


@dataclass
class _Generation:
    """What is derived from one state of the catalog; replaced (not mutated) when it moves."""

    allowed: dict[tuple[str | None, ...], frozenset[int] | None]
    items: dict[int, tuple[AdapterItem, dict[str, Any], str]]  # item, its doc, doc as JSON
    catalog_count: int = 0


class SearchService:
    def __init__(
        self,
        registry: RegistryService,
        index_dir: Path,
        embedder: str = "minilm",
        *,
        refresh_interval_s: float = 0.25,
        query_cache_size: int = 4096,
    ):
        self.registry = registry
        self.index_dir = Path(index_dir)
        self.embedder_name = embedder
        self._embedder: Any = None
        self._encoder: Any = None
        self._queries: Any = None
        self._query_cache_size = query_cache_size
        self._indexes: dict[str, Any] = {}  # kept in memory between queries (a server's case)
        self._lock = threading.Lock()  # one sync at a time: concurrent requests share indexes
        self._init_lock = threading.RLock()  # lazy loads: the model once, however many ask
        self._watch = CatalogWatch(registry.catalog, refresh_interval_s)
        self._gen = _Generation({}, {})

    # -- components -----------------------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from retrieval.embedders import get_embedder

            with self._init_lock:
                if self._embedder is None:
                    self._embedder = get_embedder(self.embedder_name)
        return self._embedder

    def warm(self) -> None:
        """Load the indexes and the text model now (a server's start-up), not on a query."""
        self.refresh()
        self.query_vector("warm up")

    def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding: cached, and concurrent misses share one model call."""
        if self._queries is None:
            from retrieval.query_embedder import QueryEmbedder

            with self._init_lock:
                if self._queries is None:
                    self._queries = QueryEmbedder(
                        self.embedder.embed, cache_size=self._query_cache_size
                    )
        vector: np.ndarray = self._queries.embed_one(query)
        return vector

    @property
    def encoder(self) -> Any:
        """The trained weight encoder, or None before `loradex encoder train`."""
        if self._encoder is None and (self.index_dir / "encoder").is_dir():
            from retrieval.weight_encoder import WeightEncoder

            self._encoder = WeightEncoder.load(self.index_dir / "encoder")
        return self._encoder

    def _load_index(self, kind: str, embedder_id: str, dim: int, rebuild: bool) -> Any:
        from retrieval.index import VectorIndex

        cached = self._indexes.get(kind)
        if cached is not None and not rebuild and cached.embedder_id == embedder_id:
            return cached
        path = self.index_dir / f"{kind}.faiss"
        if path.exists() and not rebuild:
            return VectorIndex.load(path, embedder_id, dim)
        return VectorIndex(dim, embedder_id, ann_threshold=20_000)

    # -- keeping the indexes in step with the catalog -------------------------------------------
    def sync(self, *, rebuild: bool = False) -> dict[str, int]:
        """Embed what the catalog has and the index lacks; drop what the catalog no longer has."""
        with self._lock:
            self._watch.forget()
            return self._sync(rebuild)

    def refresh(self) -> None:
        """Sync only when the catalog may have changed (see the module docstring). A request
        arriving while another thread syncs answers from the current indexes."""
        if self._indexes and not self._watch.due():
            return
        if not self._lock.acquire(blocking=not self._indexes):
            return
        try:
            if self._watch.moved() or not self._indexes:
                self._sync(rebuild=False)
        except BaseException:
            self._watch.forget()  # retry on the next request instead of trusting half a sync
            raise
        finally:
            self._lock.release()

    def _sync(self, rebuild: bool) -> dict[str, int]:
        catalog_ids = set(self.registry.catalog.list_version_ids())
        items = None
        report = {}
        sides: list[tuple[str, Any, Any]] = [("text", self.embedder, self._embed_texts)]
        if self.encoder is not None:
            sides.append(("weights", self.encoder, self._embed_weights))
        indexes = {}
        for kind, model, embed in sides:
            index = self._load_index(kind, model.embedder_id, self._dim(model), rebuild)
            have = {int(i) for i in index.ids()}
            missing = sorted(catalog_ids - have)
            stale = have - catalog_ids
            if missing:
                items = items or self.registry.catalog.items_by_ids(sorted(catalog_ids))
                index.add(missing, embed([items[i] for i in missing]))
            if stale:
                index.remove(sorted(stale))
            if missing or stale or rebuild or not (self.index_dir / f"{kind}.faiss").exists():
                if index.count >= index.ann_threshold and index.backend == "flat":
                    index.rebuild()
                self.index_dir.mkdir(parents=True, exist_ok=True)
                index.save(self.index_dir / f"{kind}.faiss")
            report[f"{kind}_added"], report[f"{kind}_removed"] = len(missing), len(stale)
            report[f"{kind}_count"] = index.count
            indexes[kind] = index
        self._indexes = indexes
        self._gen = _Generation({}, {}, catalog_count=len(catalog_ids))
        return report

    @staticmethod
    def _dim(model: Any) -> int:
        dim = getattr(model, "dim", None) or model.config.out_dim
        return int(dim)

    def _embed_texts(self, items: list[AdapterItem]) -> np.ndarray:
        from retrieval.embedders import card_text

        return self.embedder.embed([card_text(i.name, i.description, i.tags) for i in items])

    def _embed_weights(self, items: list[AdapterItem]) -> np.ndarray:
        adapters = [self.registry.load(AdapterRef(i.name, i.version)).adapter for i in items]
        return np.asarray(self.encoder.embed_many(adapters), np.float32)

    # -- queries --------------------------------------------------------------------------------
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
        self.refresh()
        return self._search(query, k, mode, (base_model, tag, source), cached_only=False)

    def search_cached(
        self,
        query: str,
        *,
        k: int = 10,
        mode: str = "hybrid",
        base_model: str | None = None,
        tag: str | None = None,
        source: str | None = None,
    ) -> list[SearchResult] | None:
        """``search``'s answer when memory alone gives it — no catalog query, no model call,
        no re-check due — else None. Cheap enough for an event loop to call inline, so
        repeated queries never wait for a worker thread."""
        if not self._indexes or self._watch.due():
            return None
        try:
            return self._search(query, k, mode, (base_model, tag, source), cached_only=True)
        except _NeedsIO:
            return None

    def _search(
        self,
        query: str,
        k: int,
        mode: str,
        filters: tuple[str | None, str | None, str | None],
        cached_only: bool,
    ) -> list[SearchResult]:
        from retrieval.search import SearchEngine

        indexes, gen = self._indexes, self._gen
        if mode == "weights" and "weights" not in indexes:
            raise BadInputError(
                "weight search needs a trained weight encoder: run `loradex encoder train`",
                code="encoder_missing",
            )
        allowed = self._allowed(gen, *filters, cached_only=cached_only)
        embed = self._cached_vector if cached_only else self.query_vector
        engine = SearchEngine(embed, indexes.get("text"), indexes.get("weights"))
        return self._results(gen, engine.search(query, k, mode, allowed), cached_only)

    def _cached_vector(self, query: str) -> np.ndarray:
        vector = self._queries.cached(query) if self._queries is not None else None
        if vector is None:
            raise _NeedsIO
        return vector

    def similar(self, ref: AdapterRef, *, k: int = 10) -> list[SearchResult]:
        from retrieval.search import SearchEngine

        self.refresh()
        indexes, gen = self._indexes, self._gen
        if "weights" not in indexes:
            raise BadInputError(
                "`similar` compares weight embeddings: run `loradex encoder train` first",
                code="encoder_missing",
            )
        detail = self.registry.show(ref)
        own = self.registry.catalog.version_id(detail.name, detail.version)
        engine = SearchEngine(self.query_vector, None, indexes["weights"])
        return self._results(gen, engine.similar(own, k))

    def _allowed(
        self,
        gen: _Generation,
        base_model: str | None,
        tag: str | None,
        source: str | None,
        cached_only: bool = False,
    ) -> frozenset[int] | None:
        """Latest version of each adapter passing the filters (filters live in the catalog);
        None when that is every version in the catalog (no filtering needed)."""
        key = (base_model, tag, source)
        if key not in gen.allowed:
            if cached_only:
                raise _NeedsIO
            ids = frozenset(
                self.registry.catalog.latest_version_ids(
                    base_model=base_model, tag=tag, source=source
                )
            )
            gen.allowed[key] = None if len(ids) == gen.catalog_count else ids
        return gen.allowed[key]

    def _results(
        self, gen: _Generation, hits: list[Any], cached_only: bool = False
    ) -> list[SearchResult]:
        found = {h.id: gen.items[h.id] for h in hits if h.id in gen.items}
        missing = [h.id for h in hits if h.id not in found]
        if missing and cached_only:
            raise _NeedsIO
        for vid, item in self.registry.catalog.items_by_ids(missing).items():
            doc = item.model_dump(mode="json")
            found[vid] = (item, doc, _compact(doc))
            _evict_oldest(gen.items, ITEM_CACHE_SIZE - 1)
            gen.items[vid] = found[vid]
        out = []
        for h in hits:
            if h.id in found:  # else deleted since the index was synced: dropped
                item, doc, doc_json = found[h.id]
                out.append(
                    SearchResult(item, h.score, h.text_score, h.weight_score, h.why, doc, doc_json)
                )
        return out

    # -- the weight encoder ---------------------------------------------------------------------
    def train_encoder(self) -> dict[str, Any]:
        """Train on every adapter with a description (zoo adapters bring three paraphrases)."""
        from retrieval.weight_encoder import train_encoder

        items, _ = self.registry.ls(limit=10**9)
        described = [i for i in items if i.description.strip()]
        texts = [i.metadata.get("descriptions") or [i.description] for i in described]
        adapters = [self.registry.load(AdapterRef(i.name, i.version)).adapter for i in described]
        embeddings = [self.embedder.embed(t) for t in texts]
        encoder, losses = train_encoder(adapters, embeddings, self.embedder.embedder_id)
        target = self.index_dir / "encoder"
        encoder.save(target)
        self._encoder = None
        self._indexes.pop("weights", None)
        (self.index_dir / "weights.faiss").unlink(missing_ok=True)  # built for the old encoder
        report = self.sync()
        return {
            "version": encoder.version,
            "adapters": len(adapters),
            "final_loss": float(losses[-1]) if losses else None,
            **report,
        }
