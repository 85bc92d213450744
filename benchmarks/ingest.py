"""Ingest benchmark: register N zoo-sized adapters into SQLite (and PostgreSQL when given).

Adapters are real zoo adapters with one mantissa byte perturbed per copy, so every digest differs
but the files stay valid fp16 (the low byte of a little-endian fp16 holds only mantissa bits, so
no NaN/Inf can appear). Each registration does the full path a user's `loradex add` does:
strict safetensors + PEFT validation, finite check, sha256, temp write + fsync + atomic rename,
one catalog transaction.

Three ways of registering, side by side per backend: `sequential` (one durable commit per
adapter, what a single `loradex add` does), `4-writers` (four concurrent writers, as API uploads
arrive) and `batch` (50 adapters per commit with concurrent blob writes: `import-zoo`, sync).
Prints adapters/s, p50/p95 `show` latency and bytes on disk vs raw.
Target (issue #2): >= 100 adapters/s on the 2-core CI machine with SQLite.

    python benchmarks/ingest.py [--n 1000] [--pg-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.config import Settings  # noqa: E402
from hub.core.models import AdapterMeta  # noqa: E402
from hub.core.names import AdapterRef  # noqa: E402
from hub.services.container import Container  # noqa: E402
from storage.peft_format import read_peft_bytes  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
MODES = ("sequential", "4-writers", "batch")
BATCH = 50


def _reset_pg(url: str) -> None:
    """Each run starts from an empty PostgreSQL catalog (the database is the benchmark's own)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def zoo_sources() -> list[tuple[str, bytes, bytes]]:
    manifest = json.loads((ZOO / "manifest.json").read_text())
    out = []
    for rec in manifest["adapters"]:
        d = ZOO / rec["adapter"]
        config = (d / "adapter_config.json").read_bytes()
        weights = (d / "adapter_model.safetensors").read_bytes()
        out.append((rec["task"], config, weights))
    return out


def perturbed(weights: bytes, i: int) -> bytes:
    data_start = 8 + struct.unpack("<Q", weights[:8])[0]
    buf = bytearray(weights)
    pos = data_start + 2 * (i % ((len(weights) - data_start) // 2))  # low byte of an fp16
    buf[pos] = (buf[pos] + 1 + i // 256) % 256
    return bytes(buf)


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ingest(registry, jobs, mode: str) -> None:
    """Register ``jobs`` [(config, weights, meta)] the way ``mode`` names."""

    def one(job):
        config, weights, meta = job
        registry.add_parsed(read_peft_bytes(config, weights), meta)

    if mode == "sequential":
        for job in jobs:
            one(job)
    elif mode == "4-writers":
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, jobs))
    else:  # group commit, as import-zoo and sync do
        for i in range(0, len(jobs), BATCH):
            batch = [(read_peft_bytes(c, w), m, {}) for c, w, m in jobs[i : i + BATCH]]
            registry.add_many(batch)


def run(backend: str, mode: str, settings: Settings, n: int) -> dict[str, float | str]:
    registry = Container(settings).registry
    sources = zoo_sources()
    jobs = []
    for i in range(n):
        task, config, weights = sources[i % len(sources)]
        meta = AdapterMeta(name=f"{task}-{i:05d}", description=task)
        jobs.append((config, perturbed(weights, i), meta))
    raw = sum(len(c) + len(w) for c, w, _ in jobs)
    t0 = time.perf_counter()
    ingest(registry, jobs, mode)
    elapsed = time.perf_counter() - t0

    lat = []
    for i in range(0, n, max(1, n // 200)):
        s = time.perf_counter()
        registry.show(AdapterRef(jobs[i][2].name))
        lat.append((time.perf_counter() - s) * 1000)
    lat.sort()
    db_bytes = sum(p.stat().st_size for p in settings.home.glob("catalog.db*"))
    return {
        "backend": backend,
        "mode": mode,
        "adapters": n,
        "adapters_per_s": n / elapsed,
        "show_p50_ms": statistics.median(lat),
        "show_p95_ms": lat[int(0.95 * (len(lat) - 1))],
        "raw_mb": raw / 1e6,
        "blobs_mb": disk_bytes(settings.resolved_blob_dir) / 1e6,
        "sqlite_mb": db_bytes / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--pg-url", default=None, help="also run against this PostgreSQL database")
    ap.add_argument("--modes", default=",".join(MODES), help="sequential,4-writers,batch")
    args = ap.parse_args()
    rows = []
    backends = [("sqlite", None)] + ([("postgresql", args.pg_url)] if args.pg_url else [])
    for backend, url in backends:
        for mode in args.modes.split(","):
            with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
                if url:
                    _reset_pg(url)
                settings = Settings(home=Path(tmp), database_url=url)
                rows.append(run(backend, mode, settings, args.n))
                print(rows[-1], file=sys.stderr)
    cols = list(rows[0])
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(
            " | ".join(f"{v:>14.2f}" if isinstance(v, float) else f"{v!s:>14}" for v in r.values())
        )
    sqlite = rows[0]["adapters_per_s"]
    print(
        f"target: >= 100 adapters/s with SQLite -> {'MET' if sqlite >= 100 else 'NOT MET'} "
        f"({sqlite:.1f}/s)"
    )


if __name__ == "__main__":
    main()
