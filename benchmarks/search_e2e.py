"""End-to-end search through the service at catalog scale (part of benchmarks/search_speed.py).

    .venv/bin/python benchmarks/search_e2e.py [--adapters 100000] [--queries 100] [--rebuild]

1. Bulk-inserts N synthetic adapters (one version each) straight into a fresh SQLite catalog
   (executemany, one transaction; the registry's validation is not what is measured here).
2. Seeds the text index with synthetic embedding-like card vectors keyed to those versions,
   as a previous ``reindex`` would have left it (embedding 10^5 cards with MiniLM on 2 busy
   cores would take an hour and does not change query latency).
3. Opens the real SearchService with the real MiniLM embedder and measures: first sync (load +
   catalog diff), query text -> embedding -> top-10 with catalog metadata (p50/p95/p99), the
   same with a ``--tag`` filter, adding one real adapter through the registry until a search
   returns it, and editing one card until a search for its new text returns it first.
   ``--rebuild`` also runs ``reindex`` in a thread while querying.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.config import Settings  # noqa: E402
from hub.core.models import AdapterMeta  # noqa: E402
from hub.services.container import Container  # noqa: E402
from hub.services.search import INDEX_PARAMS  # noqa: E402
from hub.services.search_indexes import IndexSide  # noqa: E402
from storage.catalog.tables import Adapter, AdapterVersion  # noqa: E402

VERBS = ["sort", "reverse", "translate", "count", "classify", "extract", "summarise", "convert"]
HOW = ["quickly", "in order", "by hand", "twice"]
NOUNS = ["words", "numbers", "dates", "emails", "colours", "reviews", "letters", "cities"]
QUERIES = [
    "turn a colour name into its French word",
    "sort the numbers from smallest to largest",
    "is this review positive or negative",
    "extract the domain of an email address",
    "write the word backwards",
]


EDITS = (
    "Turn a recipe into a shopping list grouped by aisle.",
    "Plan a week of dinners for two people on a budget.",
)


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def bulk_catalog(container: Container, n: int) -> float:
    """N adapters x 1 version in one transaction; returns seconds."""
    catalog = container.catalog
    now = datetime.now(UTC)
    adapters = [
        {
            "id": i + 1,
            "name": f"synth-{i:07d}",
            "description": f"{VERBS[i % 8]} the {NOUNS[(i // 8) % 8]} (variant {i})",
            "tags": ["synthetic", f"group{i % 100}"],
            "last_version": 1,
            "created_at": now,
        }
        for i in range(n)
    ]
    versions = [
        {
            "id": i + 1,
            "adapter_id": i + 1,
            "version": 1,
            "digest": hashlib.sha256(str(i).encode()).hexdigest(),
            "size_bytes": 1000,
            "base_model_id": "synthetic-base",
            "target_modules": ["q_proj", "v_proj"],
            "module_ranks": {},
            "source": "upload",
            "metadata_": {},
            "created_at": now,
        }
        for i in range(n)
    ]
    t0 = time.perf_counter()
    with catalog.engine.begin() as conn:
        conn.execute(Adapter.__table__.insert(), adapters)
        conn.execute(AdapterVersion.__table__.insert(), versions)
    return time.perf_counter() - t0


def card_like(service, n: int, seed: int = 3) -> np.ndarray:
    """n vectors that look like real card vectors: random mixtures of 3 MiniLM embeddings of
    256 template task descriptions, plus a little noise, unit rows. (Vectors from another
    distribution would make a real card an outlier that HNSW links poorly.)"""
    rng = np.random.default_rng(seed)
    texts = [f"{VERBS[i % 8]} the {NOUNS[(i // 8) % 8]} {HOW[i // 64]}" for i in range(256)]
    base = service.cards.embedder.embed(texts)  # (256, 384)
    pick = rng.integers(0, len(base), size=(n, 3))
    x = base[pick].sum(1) + 0.05 * rng.standard_normal((n, base.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def seed_text_index(container: Container, n: int) -> float:
    """Synthetic card vectors for every version, saved where the service looks."""
    sys.path.append(str(Path(__file__).resolve().parent))
    from search_speed import niced

    service = container.search
    latest = container.catalog.latest_versions()
    vecs = card_like(service, n)
    t0 = time.perf_counter()
    side = IndexSide(
        "text", service.index_dir / "text.faiss", service.cards.embedder_id, 384, INDEX_PARAMS
    )
    side.index.add([v.id for v in latest], vecs)
    side.keys = {v.id: v.key for v in latest}
    with niced(10):
        side.index.rebuild()  # HNSW above the threshold, efSearch tuned to the data
        side.save()
    return time.perf_counter() - t0


def timed_queries(service, queries: list[str], **kw) -> np.ndarray:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        hits = service.search(q, k=10, mode="text", **kw)
        times.append(time.perf_counter() - t0)
        assert hits and hits[0].item.name, "empty result"
    return np.array(times) * 1e3


def add_one_visible(container: Container) -> tuple[float, float]:
    """Register a real adapter, then search until it is returned: (add s, visible s)."""
    from tests.factories import write_adapter_dir  # a tiny real PEFT adapter

    src = write_adapter_dir(Path(tempfile.mkdtemp()) / "fresh", seed=5)
    desc = "Spell each word of the sentence in pig latin."
    t0 = time.perf_counter()
    container.registry.add_path(src, AdapterMeta(name="pig-latin", description=desc))
    t_add = time.perf_counter() - t0
    while time.perf_counter() - t0 < 30:
        names = [h.item.name for h in container.search.search(desc, k=10, mode="text")]
        if "pig-latin" in names:
            return t_add, time.perf_counter() - t0
    return t_add, float("inf")


def edit_one_visible(container: Container, name: str, desc: str) -> tuple[float, float]:
    """Rewrite one adapter's card (``loradex edit``), then search until the new text finds it
    first: (edit s, visible s). The sync finds the edited card through the card-revision
    index and re-embeds it alone; the catalog is not listed."""
    t0 = time.perf_counter()
    container.registry.edit_card(name, description=desc)
    t_edit = time.perf_counter() - t0
    while time.perf_counter() - t0 < 30:
        hits = container.search.search(desc, k=1, mode="text")
        if hits and hits[0].item.name == name:
            return t_edit, time.perf_counter() - t0
    return t_edit, float("inf")


def rebuild_while_querying(service, queries: list[str]) -> str:
    done = threading.Event()
    worker = threading.Thread(target=lambda: (service.sync(rebuild=True), done.set()))
    t0 = time.perf_counter()
    worker.start()
    lat, answered = [], 0
    while not done.is_set():
        lat.append(timed_queries(service, [queries[answered % len(queries)]])[0])
        answered += 1
    worker.join()
    return (
        f"reindex took {time.perf_counter() - t0:.1f} s; meanwhile {answered} queries answered, "
        f"p50 {np.percentile(lat, 50):.1f} ms, max {max(lat):.1f} ms"
    )


def run(n: int, n_queries: int, rebuild: bool) -> list[str]:
    home = Path(tempfile.mkdtemp(prefix="loradex-e2e-"))
    os.environ.setdefault("LORADEX_MODEL_CACHE_DIR", str(home / "models"))
    container = Container(Settings(home=home))
    lines = [f"catalog: {n:,} adapters bulk-inserted in {bulk_catalog(container, n):.1f} s"]
    seeded = seed_text_index(container, n)
    lines.append(f"text index seeded (build + tune + save) in {seeded:.1f} s")
    service = container.search
    service.cards.embed_query("warm up")  # model load is start-up, not query time
    t0 = time.perf_counter()
    report = service.sync()
    lines.append(
        f"first sync (load index + diff catalog) {time.perf_counter() - t0:.2f} s: "
        f"{report['text_count']:,} indexed, {report['text_added']} embedded ({load()})"
    )
    queries = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(n_queries)]
    embed_ms, fp_ms = [], []
    for q in queries:
        t0 = time.perf_counter()
        service.cards.embed_query(q)
        embed_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        container.catalog.versions_fingerprint()
        fp_ms.append((time.perf_counter() - t0) * 1e3)
    lines.append(
        f"  of which: query embedding ({container.settings.text_embedder} on "
        f"{service.cards.embedder.backend_used}; LORADEX_TEXT_EMBEDDER=minilm|minilm-int8 and "
        "LORADEX_TEXT_EMBEDDER_BACKEND=torch|onnx pick them) p50 "
        f"{np.percentile(embed_ms, 50):.1f} ms / p95 "
        f"{np.percentile(embed_ms, 95):.1f} ms; catalog fingerprint p50 "
        f"{np.percentile(fp_ms, 50):.1f} ms ({load()})"
    )
    for label, kw in (("no filter", {}), ("--tag group7", {"tag": "group7"})):
        ms = timed_queries(service, queries, **kw)
        lines.append(
            f"end-to-end query -> top-10 with metadata, {label}: p50 {np.percentile(ms, 50):.1f} "
            f"ms, p95 {np.percentile(ms, 95):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms "
            f"({len(ms)} queries, {load()})"
        )
    t_add, t_vis = add_one_visible(container)
    lines.append(
        f"add one adapter: registered in {t_add * 1e3:.0f} ms, returned by search "
        f"{t_vis * 1e3:.0f} ms after the add started ({load()})"
    )
    # Right after the add its index save is still running, and an index change waits for it.
    for when, name, desc in (
        ("while the add's index save runs", f"synth-{n // 2:07d}", EDITS[0]),
        ("after it", f"synth-{n // 3:07d}", EDITS[1]),
    ):
        if when == "after it":
            t0 = time.perf_counter()
            service.saver.flush()
            when += f" ({time.perf_counter() - t0:.2f} s more)"
        t_edit, t_vis = edit_one_visible(container, name, desc)
        lines.append(
            f"edit one card {when}: written in {t_edit * 1e3:.0f} ms, its adapter first for "
            f"the new text {t_vis * 1e3:.0f} ms after the edit started ({load()})"
        )
    if rebuild:
        lines.append(rebuild_while_querying(service, queries) + f" ({load()})")
    service.saver.flush()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    for line in run(args.adapters, args.queries, args.rebuild):
        print(line, flush=True)


if __name__ == "__main__":
    main()
