"""Find adapters for a task: text, weight and hybrid search over the catalog (AutoLoRA-style).

Indexes are derived data under ``<home>/index``, one vector per adapter (its latest version):
``text.faiss`` (card embeddings), and, once a weight encoder is trained, ``weights.faiss``
(weight embeddings in the text space) and ``features.faiss`` (weight features, for
``similar``), plus ``encoder/``. They follow the catalog lazily: every query first compares a
cheap catalog fingerprint and, only when it changed, embeds the new latest versions and drops
the replaced or deleted ones (see ``search_indexes.py``), so a new adapter is searchable at once
and nothing needs a hook in every writer. ``reindex`` rebuilds off to the side and swaps, so
queries keep being answered meanwhile.

Serving many queries (the API): the fingerprint is checked at most every
``refresh_interval_s`` unless this process wrote to the catalog
(:mod:`hub.services.search_freshness`); per catalog generation the allowed-id sets and the
result items (with their JSON) are cached; query embeddings go through an LRU cache that also
batches concurrent misses into one model call (:class:`retrieval.query_embedder.QueryEmbedder`);
``search_cached`` answers a repeated query from memory alone, cheap enough for an event loop.

Semantics: results are each adapter's latest version; filters (``base_model``, ``tag``,
``source``) apply to it, in the catalog. An empty catalog gives an empty result, not an error.
A filter value that no adapter has is an unknown name (exit 2 / HTTP 400), listing known ones.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import BadInputError, ConflictError, HubError, UnknownNameError
from hub.core.names import AdapterRef
from hub.services.registry import RegistryService
from hub.services.search_freshness import CatalogWatch
from hub.services.search_indexes import BackgroundSaver, IndexSide
from hub.services.search_results import (
    Generation,
    NeedsIO,
    SearchResult,
    compact,
    evict_oldest,
    no_weight_vectors,
)
from hub.services.search_sync import IndexSync, mean_row

log = logging.getLogger(__name__)
INDEX_PARAMS: dict[str, Any] = {"backend": "auto", "ann_threshold": 20_000, "ann_backend": "hnsw"}
ITEM_CACHE_SIZE = 8192  # result items kept per catalog generation (a few KB each)
ALLOWED_CACHE_SIZE = 64  # filter combinations kept per catalog generation
# Error codes meaning "no usable weight encoder" (none trained, unreadable, or made for another
# text model): a caller that can do without weight search (the web's "similar") falls back.
NO_WEIGHT_SEARCH = frozenset(
    {"encoder_missing", "encoder_unavailable", "encoder_corrupted", "encoder_stale"}
)


class SearchService(IndexSync):
    def __init__(
        self,
        registry: RegistryService,
        index_dir: Path,
        embedder: str = "minilm",
        device: str | None = None,
        *,
        embedder_options: dict[str, Any] | None = None,
        refresh_interval_s: float = 0.25,
        query_cache_size: int = 4096,
        index_params: dict[str, Any] | None = None,
    ):
        self.registry = registry
        self.index_dir = Path(index_dir)
        self.embedder_name = embedder
        self.device = device
        self.embedder_options = embedder_options or {}  # MiniLM's backend and cache dir
        # backend policy of indexes this service builds (a saved index keeps its own)
        self.index_params = {**INDEX_PARAMS, **(index_params or {})}
        self._cards: Any = None
        self._encoder: Any = None
        self._encoder_problem: HubError | None = None  # saved encoder unreadable
        self._weights_problem: HubError | None = None  # encoder made for another text model
        self._encoder_stamp: tuple[Any, ...] | None = None  # encoder files when sides were made
        self._sides: dict[str, IndexSide] = {}  # kept in memory between queries (a server)
        self._fingerprint: tuple[Any, ...] | None = None
        self._gen = Generation(None)
        self._queries: Any = None  # QueryEmbedder, made on first use
        self._query_cache_size = query_cache_size
        self._watch = CatalogWatch(registry.catalog, refresh_interval_s)
        self._lock = threading.Lock()  # one sync at a time; queries share the sides
        self._init_lock = threading.RLock()  # lazy loads: the model once, however many ask
        self._rebuild_lock = threading.Lock()
        self.saver = BackgroundSaver(on_saved=self._mirror_text_hashes)

    # -- components -----------------------------------------------------------------------
    @property
    def cards(self) -> Any:
        """The card embedder (text model + field weights)."""
        if self._cards is None:
            from retrieval.cards import CardEmbedder
            from retrieval.embedders import get_embedder

            with self._init_lock:
                if self._cards is None:
                    hashed = self.embedder_name == "hash"
                    kwargs = {} if hashed else {"device": self._device(), **self.embedder_options}
                    self._cards = CardEmbedder(get_embedder(self.embedder_name, **kwargs))
        return self._cards

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
                        self.cards.embedder.embed, cache_size=self._query_cache_size
                    )
        vector: np.ndarray = self._queries.embed_one(query.strip())
        return vector

    def _cached_vector(self, query: str) -> np.ndarray:
        vector = self._queries.cached(query.strip()) if self._queries is not None else None
        if vector is None:
            raise NeedsIO
        return vector

    def _device(self) -> str:
        if self.device in (None, "auto"):
            from hub.runtime.devices import auto_device
            from retrieval.embedders import EMBEDDERS

            if getattr(EMBEDDERS.get(self.embedder_name), "cpu_only", False):
                return "cpu"  # a quantized CPU model: "auto" must not pick a GPU it cannot use

            return auto_device()
        return str(self.device)

    @property
    def encoder(self) -> Any:
        """The trained weight encoder, or None before `loradex encoder train` or when the saved
        one cannot be read (then ``encoder_problem`` says why)."""
        if self._encoder is None and self._encoder_problem is None:
            with self._init_lock:
                if self._encoder is None and self._encoder_problem is None:
                    self._load_encoder()
        return self._encoder

    def _load_encoder(self) -> None:
        """A broken or outdated encoder must not take text search (or `reindex`) down with it:
        it is set aside with the error that weight search will report."""
        directory = self.index_dir / "encoder"
        if not directory.is_dir():
            return
        from retrieval.weight_encoder import WeightEncoder  # torch: only when there is one

        try:
            encoder = WeightEncoder.load(directory)
        except HubError as exc:
            log.warning("weight encoder not used: %s", exc.message)
            self._encoder_problem = exc
            return
        trained_for, now = encoder.config.text_embedder_id, self.cards.embedder.embedder_id
        if trained_for != now:
            # Its outputs live in the old text space: scoring today's queries against them
            # ranks by noise. Weight *features* (for `similar`) do not depend on the text model.
            self._weights_problem = ConflictError(
                f"the weight encoder was trained for text embedder {trained_for!r}, but text is "
                f"now embedded with {now!r}: run `loradex encoder train`",
                code="encoder_stale",
            )
            log.warning("weight search off: %s", self._weights_problem.message)
        self._encoder = encoder

    @property
    def encoder_problem(self) -> HubError | None:
        """Why weight search is unavailable although an encoder was saved, else None."""
        _ = self.encoder
        return self._encoder_problem or self._weights_problem

    def _weight_search_error(self, what: str) -> HubError:
        return self.encoder_problem or BadInputError(
            f"{what}: run `loradex encoder train`", code="encoder_missing"
        )

    def _encoder_files(self) -> tuple[Any, ...] | None:
        from retrieval.encoder_files import saved_encoder_stamp

        return saved_encoder_stamp(self.index_dir / "encoder")

    def refresh(self) -> None:
        """``IndexSync.refresh``, and first: an encoder saved (or removed) by another process
        since the sides were made resets them, as ``train_encoder`` does in-process."""
        if self._sides and self._watch.due() and self._encoder_files() != self._encoder_stamp:
            log.info("weight encoder changed on disk: reloading it and its indexes")
            with self._lock:
                self._forget_encoder()
        super().refresh()

    def _forget_encoder(self) -> None:
        """Drop the encoder and every side built with it (caller holds ``_lock``)."""
        self._encoder, self._sides, self._fingerprint = None, {}, None
        self._encoder_problem = self._weights_problem = None
        self._gen = Generation(None)

    def _new_sides(self, load: bool) -> dict[str, IndexSide]:
        self._encoder_stamp = self._encoder_files()
        specs = [("text", self.cards.embedder_id, self.cards.dim)]
        if self.encoder is not None:
            if self._weights_problem is None:
                specs.append(("weights", self.encoder.embedder_id, self.encoder.config.out_dim))
            specs.append(("features", self.encoder.feature_id, self.encoder.feature_dim))
        sides = {}
        for kind, embedder_id, dim in specs:
            side = self._side(kind, embedder_id, dim)
            if load:
                side.load()
            sides[kind] = side
        return sides

    def _side(self, kind: str, embedder_id: str, dim: int) -> IndexSide:
        path = self.index_dir / f"{kind}.faiss"
        return IndexSide(kind, path, embedder_id, dim, self.index_params)

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
        from retrieval.search import check_request

        check_request(query, k, mode)  # bad input fails fast, before any index work
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
        """``search``'s answer when memory alone gives it (no catalog query, no model call, no
        re-check due), else None: cheap enough for an event loop to call inline."""
        from retrieval.search import check_request

        check_request(query, k, mode)
        if not self._sides or self._watch.due():
            return None
        try:
            return self._search(query, k, mode, (base_model, tag, source), cached_only=True)
        except NeedsIO:
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

        sides, gen = self._sides, self._gen
        if sides["text"].count == 0:
            return []  # an empty catalog: nothing to find, not an error
        if mode == "weights" and "weights" not in sides:
            raise self._weight_search_error("weight search needs a trained weight encoder")
        if mode == "weights" and sides["weights"].count == 0:
            raise no_weight_vectors()  # adapters are registered: "reindex" would not help
        allowed = self._allowed(gen, *filters, cached_only=cached_only)
        weights = sides["weights"].index if "weights" in sides else None
        embed = self._cached_vector if cached_only else self.query_vector
        engine = SearchEngine(embed, sides["text"].index, weights)
        return self._results(gen, engine.search(query, k, mode, allowed), cached_only)

    def similar(self, ref: AdapterRef, *, k: int = 10) -> list[SearchResult]:
        """Nearest adapters to ``ref`` in weight-feature space (``ref`` itself excluded)."""
        from retrieval.search import SearchEngine, check_k

        check_k(k)
        detail = self.registry.show(ref)  # unknown name -> not found, before any index work
        self.refresh()
        if "features" not in self._sides:
            raise self._weight_search_error("`similar` compares adapters' weights")
        index = self._sides["features"].index
        own = self.registry.catalog.version_id(detail.name, detail.version)
        vec = index.vectors([own]) if own in index else self._features_of(detail)
        engine = SearchEngine(self.query_vector, None, index)
        return self._results(self._gen, engine.similar_to(vec, k, exclude={own}))

    def _features_of(self, detail: Any) -> np.ndarray:
        """Weight features of a version that is not indexed (an older version)."""
        own = self.registry.catalog.version_id(detail.name, detail.version)
        return mean_row(np.asarray(self.encoder.feature_vectors(self._members(own)), np.float32))[
            None
        ]

    def _allowed(
        self,
        gen: Generation,
        base_model: str | None,
        tag: str | None,
        source: str | None,
        cached_only: bool = False,
    ) -> frozenset[int] | None:
        """Latest-version ids passing the filters, or None when no filter is given."""
        filters = {"base_model": base_model, "tag": tag, "source": source}
        given = {f: v for f, v in filters.items() if v is not None}
        if not given:
            return None
        key = tuple(sorted(given.items()))
        allowed = gen.allowed.get(key)
        if allowed is None:  # a catalog scan (JSON tags): kept until the catalog changes
            if cached_only:
                raise NeedsIO
            allowed = frozenset(self.registry.catalog.latest_version_ids(**given))
            evict_oldest(gen.allowed, ALLOWED_CACHE_SIZE - 1)
            gen.allowed[key] = allowed
        if not allowed:
            if cached_only:
                raise NeedsIO
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

    def _results(
        self, gen: Generation, hits: list[Any], cached_only: bool = False
    ) -> list[SearchResult]:
        found = {h.id: gen.items[h.id] for h in hits if h.id in gen.items}
        missing = [h.id for h in hits if h.id not in found]
        if missing and cached_only:
            raise NeedsIO
        for vid, item in self.registry.catalog.items_by_ids(missing).items():
            doc = item.model_dump(mode="json")
            found[vid] = (item, doc, compact(doc))
            evict_oldest(gen.items, ITEM_CACHE_SIZE - 1)
            gen.items[vid] = found[vid]
        out = []
        for h in hits:
            if h.id in found:  # else deleted since the index was synced: dropped
                item, doc, doc_json = found[h.id]
                out.append(
                    SearchResult(item, h.score, h.text_score, h.weight_score, h.why, doc, doc_json)
                )
        return out

    # -- the weight encoder ---------------------------------------------------------------
    def train_encoder(self) -> dict[str, Any]:
        """Train on every adapter with a description (zoo adapters bring three paraphrases)."""
        from retrieval.weight_encoder import train_encoder

        self.check_index_dir()
        saves_before = len(self.saver.errors)
        if "text" not in self._sides:  # in memory it was loaded for this text model already
            # A text index saved by another text model (or damaged) refuses here, with
            # index_stale, before the saved encoder is replaced and the final sync would.
            self._side("text", self.cards.embedder_id, self.cards.dim).load()
        items, _ = self.registry.ls(limit=10**9)
        # mixtures have no weights of their own to learn from (they are embedded as their experts)
        described = [i for i in items if i.description.strip() and i.source != "mixture"]
        texts = [i.metadata.get("descriptions") or [i.description] for i in described]
        adapters = [self.registry.load(AdapterRef(i.name, i.version)).adapter for i in described]
        embedder = self.cards.embedder
        embeddings = [embedder.embed(t) for t in texts]
        encoder, losses = train_encoder(adapters, embeddings, embedder.embedder_id)
        encoder.save(self.index_dir / "encoder")
        with self._lock:
            self._forget_encoder()
            for kind in ("weights", "features"):  # built for the old encoder
                (self.index_dir / f"{kind}.faiss").unlink(missing_ok=True)
        report = self.sync()
        self.flush_saves(saves_before)
        return {
            "version": encoder.version,
            "adapters": len(adapters),
            "final_loss": float(losses[-1]) if losses else None,
            **report,
        }
