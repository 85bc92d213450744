"""The search fast path a server relies on: the query-embedding cache and micro-batcher, the
catalog change detection that skips per-request syncs, and freshness bounds (own writes at
once, other processes' writes within ``search_refresh_interval_s``)."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from hub.core.errors import UnknownNameError
from hub.core.models import AdapterMeta
from hub.core.names import AdapterRef
from hub.services.jobs import JobService
from retrieval.query_embedder import QueryEmbedder
from tests.api_helpers import make_container
from tests.factories import write_adapter_dir


class CountingEmbed:
    """A deterministic embedder that records each batch it is given (and can be slow)."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay, self.fail_on = delay, fail_on
        self._lock = threading.Lock()

    def __call__(self, texts):
        with self._lock:
            self.batches.append(list(texts))
        time.sleep(self.delay)
        if self.fail_on in texts:
            raise RuntimeError(f"cannot embed {self.fail_on!r}")
        return np.stack([np.full(4, float(len(t)), np.float32) for t in texts])


def test_cache_hits_skip_the_model_and_lru_evicts_the_oldest():
    embed = CountingEmbed()
    q = QueryEmbedder(embed, cache_size=2)
    first = q.embed_one("aa")
    assert q.embed_one("aa") is first and len(embed.batches) == 1
    assert not first.flags.writeable  # shared between callers: nobody may change it
    q.embed_one("bbb")
    q.embed_one("aa")  # refreshes "aa"; "bbb" is now the oldest
    q.embed_one("cccc")  # evicts "bbb"
    q.embed_one("aa")
    assert len(embed.batches) == 3
    q.embed_one("bbb")
    assert embed.batches[-1] == ["bbb"] and q.stats["hits"] == 3


def test_concurrent_misses_share_model_calls_and_get_their_own_vectors():
    embed = CountingEmbed(delay=0.05)
    q = QueryEmbedder(embed, max_batch=32)
    texts = [f"query number {i}" for i in range(24)] + ["query number 3"] * 4
    out: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def one(i: int) -> None:
        barrier.wait()
        out[i] = q.embed_one(texts[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(out[i][0] == len(texts[i]) for i in range(len(texts)))
    embedded = [t for batch in embed.batches for t in batch]
    assert sorted(embedded) == sorted(set(texts))  # each distinct text embedded exactly once
    assert len(embed.batches) < 24 // 2  # combined: far fewer model calls than queries
    assert max(len(b) for b in embed.batches) > 1


def test_a_failing_batch_fails_its_waiters_and_the_next_query_still_works():
    embed = CountingEmbed(fail_on="bad")
    q = QueryEmbedder(embed)
    with pytest.raises(RuntimeError, match="cannot embed 'bad'"):
        q.embed_one("bad")
    assert q.embed_one("good")[0] == 4.0


@pytest.fixture
def container(tmp_path, catalog_url):
    c = make_container(
        tmp_path / "home", catalog_url, text_embedder="hash", search_refresh_interval_s=0.25
    )
    for i, (name, desc) in enumerate(
        [("capitals", "Name the capital city of a country."), ("reverse", "Reverse a word.")]
    ):
        c.registry.add_path(write_adapter_dir(tmp_path / name, seed=i), AdapterMeta(name=name))
        c.registry.add_path(
            write_adapter_dir(tmp_path / f"{name}-2", seed=i + 10),
            AdapterMeta(name=name, description=desc),
        )
    yield c
    c.catalog.close()


def names(results) -> list[str]:
    return [r.item.name for r in results]


def test_unchanged_catalog_is_not_resynced_per_query(container, monkeypatch):
    search = container.search
    assert names(search.search("capital city", k=1, mode="text")) == ["capitals"]
    syncs, checks = [], []
    catalog = container.catalog
    monkeypatch.setattr(catalog, "list_version_ids", lambda: syncs.append(1) or [])
    real_fingerprint = catalog.versions_fingerprint
    monkeypatch.setattr(
        catalog, "versions_fingerprint", lambda: checks.append(1) or real_fingerprint()
    )
    for _ in range(50):
        hits = search.search("capital city", k=2, mode="text")
    assert names(hits) == ["capitals", "reverse"] and [h.item.version for h in hits] == [2, 2]
    assert syncs == [] and len(checks) <= 2  # 50 queries well inside one refresh interval


def test_own_writes_show_at_once_and_other_processes_within_the_interval(container, tmp_path):
    search = container.search
    search.search("capital", mode="text")
    container.registry.add_path(
        write_adapter_dir(tmp_path / "planets", seed=7),
        AdapterMeta(name="planets", description="Name the planets in order."),
    )
    assert names(search.search("planets in order", k=1, mode="text")) == ["planets"]
    container.registry.rm(AdapterRef("planets"))
    assert "planets" not in names(search.search("planets in order", mode="text"))

    settings = container.settings  # another process: its own catalog object
    other = make_container(settings.home, settings.database_url, text_embedder="hash")
    other.registry.add_path(
        write_adapter_dir(tmp_path / "colours", seed=8),
        AdapterMeta(name="colours", description="Translate a colour name into French."),
    )
    t0 = time.monotonic()
    while names(search.search("colour name in French", k=1, mode="text")) != ["colours"]:
        assert time.monotonic() - t0 < 1.0, "a new adapter must be searchable within 1 s"
        time.sleep(0.01)
    other.registry.rm(AdapterRef("colours"))
    t0 = time.monotonic()
    while "colours" in names(search.search("colour name in French", mode="text")):
        assert time.monotonic() - t0 < 1.0
        time.sleep(0.01)
    other.catalog.close()


def test_filters_still_restrict_to_the_latest_matching_versions(container):
    hits = container.search.search("reverse a word", k=5, mode="text", source="upload")
    assert sorted((h.item.name, h.item.version) for h in hits) == [
        ("capitals", 2),
        ("reverse", 2),
    ]
    with pytest.raises(UnknownNameError, match="none-has-it"):  # unknown values are named
        container.search.search("x", mode="text", tag="none-has-it")


def test_ray_backend_without_ray_installed_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when it is absent
    c = make_container(tmp_path / "home", jobs_backend="ray")
    with pytest.raises(Exception, match=r"pip install 'loradex\[ray\]'") as exc:
        JobService(c).start()
    assert getattr(exc.value, "code", None) == "ray_unavailable"
    c.catalog.close()


def test_search_cached_answers_only_from_memory_and_agrees_with_search(container, tmp_path):
    search = container.search
    assert search.search_cached("capital city", k=2, mode="text") is None  # nothing loaded yet
    full = search.search("capital city", k=2, mode="text")
    fast = search.search_cached("capital city", k=2, mode="text")
    assert fast is not None
    assert [(r.item.name, r.score, r.to_dict()) for r in fast] == [
        (r.item.name, r.score, r.to_dict()) for r in full
    ]
    assert search.search_cached("a query never embedded", mode="text") is None
    assert search.search_cached("capital city", mode="text", tag="never-filtered") is None
    container.registry.add_path(
        write_adapter_dir(tmp_path / "planets", seed=7), AdapterMeta(name="planets")
    )
    assert search.search_cached("capital city", k=2, mode="text") is None  # re-check due


def test_item_cache_is_bounded_and_results_stay_right(container, monkeypatch):
    import hub.services.search as search_module

    monkeypatch.setattr(search_module, "ITEM_CACHE_SIZE", 1)
    search = container.search
    for query, top in [("capital city", "capitals"), ("reverse a word", "reverse")] * 2:
        hits = search.search(query, k=2, mode="text")
        assert hits[0].item.name == top and len(hits) == 2
        assert len(search._gen.items) <= 1


def test_pre_encoded_json_is_exactly_the_dict_encoded(container):
    import json

    for r in container.search.search("capital city", k=2, mode="text"):
        assert r.to_json() == json.dumps(r.to_dict(), separators=(",", ":"))
        r.item_json = None  # the uncached path agrees too
        assert r.to_json() == json.dumps(r.to_dict(), separators=(",", ":"))
