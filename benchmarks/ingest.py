"""Ingest benchmark: register N zoo-sized adapters into SQLite (and PostgreSQL when given).

Adapters are real zoo adapters with one mantissa byte perturbed per copy, so every digest differs
but the files stay valid fp16 (the low byte of a little-endian fp16 holds only mantissa bits, so
no NaN/Inf can appear). Each registration does the full path a user's `loradex add` does:
strict safetensors + PEFT validation, finite check, sha256, temp write + fsync + atomic rename,
one catalog transaction.

Prints adapters/s, p50/p95 `show` latency and bytes on disk vs raw, per backend, side by side.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.config import Settings  # noqa: E402
from hub.core.models import AdapterMeta  # noqa: E402
from hub.core.names import AdapterRef  # noqa: E402
from hub.services.container import Container  # noqa: E402
from storage.peft_format import read_peft_bytes  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"


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


def run(label: str, settings: Settings, n: int) -> dict[str, float | str]:
    c = Container(settings)
    registry = c.registry
    sources = zoo_sources()
    raw = 0
    t0 = time.perf_counter()
    for i in range(n):
        task, config, weights = sources[i % len(sources)]
        weights = perturbed(weights, i)
        raw += len(weights) + len(config)
        parsed = read_peft_bytes(config, weights)
        registry.add_parsed(parsed, AdapterMeta(name=f"{task}-{i:05d}", description=task))
    elapsed = time.perf_counter() - t0

    lat = []
    for i in range(0, n, max(1, n // 200)):
        task = sources[i % len(sources)][0]
        s = time.perf_counter()
        registry.show(AdapterRef(f"{task}-{i:05d}"))
        lat.append((time.perf_counter() - s) * 1000)
    lat.sort()
    blob_bytes = disk_bytes(settings.resolved_blob_dir)
    db_path = settings.home / "catalog.db"
    db_bytes = (
        sum(p.stat().st_size for p in settings.home.glob("catalog.db*")) if db_path.exists() else 0
    )
    return {
        "backend": label,
        "adapters": n,
        "adapters_per_s": n / elapsed,
        "show_p50_ms": statistics.median(lat),
        "show_p95_ms": lat[int(0.95 * (len(lat) - 1))],
        "raw_mb": raw / 1e6,
        "blobs_mb": blob_bytes / 1e6,
        "sqlite_mb": db_bytes / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--pg-url", default=None, help="also run against this PostgreSQL database")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        home = Path(tmp) / "sqlite"
        rows.append(run("sqlite", Settings(home=home), args.n))
        if args.pg_url:
            home = Path(tmp) / "pg"
            rows.append(run("postgresql", Settings(home=home, database_url=args.pg_url), args.n))
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
