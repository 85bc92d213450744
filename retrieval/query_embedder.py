"""Query embeddings for a server: an LRU cache plus micro-batching of concurrent misses.

A search server sees two kinds of query text: popular ones that repeat (served from the cache,
no model call) and new ones, which arrive concurrently. Embedding 16 short queries in one
MiniLM forward pass costs a few times one query, not 16 times (PERF §A1/A5), so concurrent
misses are combined: the first thread that finds no batch running becomes the *leader*, takes
every waiting query (up to ``max_batch``) and embeds them in one call; the others wait on
their futures, and one of them leads the next batch. No background thread, no added delay at
low load (a lone query is its own batch), and identical concurrent queries share one slot.

The cache key is the exact query text: the vector is a pure function of it (the embedder is
deterministic and its id is fixed for the lifetime of this object).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

EmbedFn = Callable[[Sequence[str]], np.ndarray]


class QueryEmbedder:
    """``embed_one(text)`` -> unit vector (read-only), cached and batched over ``embed``."""

    def __init__(self, embed: EmbedFn, *, cache_size: int = 4096, max_batch: int = 32) -> None:
        if cache_size < 0 or max_batch < 1:
            raise ValueError("cache_size must be >= 0 and max_batch >= 1")
        self._embed = embed
        self.cache_size, self.max_batch = cache_size, max_batch
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: dict[str, Future[np.ndarray]] = {}  # queued or being embedded
        self._waiting: list[str] = []  # queued, not yet taken by a leader (FIFO)
        self._cond = threading.Condition()
        self._leading = False
        self.stats = {"hits": 0, "misses": 0, "batches": 0, "batched_queries": 0}

    def embed_one(self, text: str) -> np.ndarray:
        with self._cond:
            hit = self._hit(text)
            if hit is not None:
                return hit
            self.stats["misses"] += 1
            future = self._pending.get(text)
            if future is None:
                future = self._pending[text] = Future()
                self._waiting.append(text)
        self._until_done(future)
        return future.result()

    def _until_done(self, future: Future[np.ndarray]) -> None:
        """Wait for ``future``; whenever no batch is running and queries wait, lead one."""
        while True:
            with self._cond:
                while not future.done() and (self._leading or not self._waiting):
                    self._cond.wait()
                if future.done():
                    return
                self._leading = True
                texts = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                batch = {text: self._pending[text] for text in texts}
            try:
                self._run_batch(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()

    def _run_batch(self, batch: dict[str, Future[np.ndarray]]) -> None:
        texts = list(batch)
        try:
            rows = list(np.asarray(self._embed(texts), dtype=np.float32))
            if len(rows) != len(texts):
                raise RuntimeError(f"embedder returned {len(rows)} vectors for {len(texts)}")
        except BaseException as exc:  # every waiter gets the error, not a hang
            with self._cond:
                for text in texts:
                    del self._pending[text]
            for future in batch.values():
                future.set_exception(exc)
            return
        with self._cond:
            self.stats["batches"] += 1
            self.stats["batched_queries"] += len(texts)
            for text, vec in zip(texts, rows, strict=True):
                vec.setflags(write=False)  # shared by every caller of this text
                del self._pending[text]
                if self.cache_size:
                    self._cache[text] = vec
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        for text, vec in zip(texts, rows, strict=True):
            batch[text].set_result(vec)

    def cached(self, text: str) -> np.ndarray | None:
        """The cached vector of ``text`` or None; never calls the model (never blocks long)."""
        with self._cond:
            return self._hit(text)

    def _hit(self, text: str) -> np.ndarray | None:
        """Cache lookup (caller holds the lock): a hit is counted and becomes most recent."""
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            self.stats["hits"] += 1
        return hit

    def clear(self) -> None:
        with self._cond:
            self._cache.clear()
