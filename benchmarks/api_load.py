"""API load benchmark: `GET /search` over loopback at 16 concurrent clients, with baselines.

Starts `loradex serve` as a subprocess on 127.0.0.1 over a temp data dir with the zoo imported
(`loradex import-zoo ../shared/zoo`, text search with all-MiniLM-L6-v2), then drives it with a
lean asyncio HTTP/1.1 client (one keep-alive connection per simulated client; a raw socket, so
the client's own CPU per request stays small on a machine it shares with the server). Each row
is bounded by a request count and a time limit. Rows, all measured in the same run:

- `/health`: the framework floor (routing, one catalog round trip, JSON) — the baseline;
- `/adapters?limit=20`: a plain catalog read;
- search, warm: 16 task descriptions cycled, each sent before timing over as many connections
  as there are clients (so every server process has them cached, as for any popular query);
- search, cold: every request a distinct query never sent before (each one is embedded);
- search, mix: 80 % warm / 20 % cold, the shape of real traffic (popular queries repeat).

Prints req/s, p50/p99 latency and server/client CPU per request next to the issue's target
(>= 300 req/s, p99 <= 100 ms on the 2-core CI box), and the load average: other work on the
machine takes CPU from the server, so the figures are only comparable on an idle machine.

    python benchmarks/api_load.py [--requests 4000] [--concurrency 16] [--seconds 20]
    python benchmarks/api_load.py --processes 2     # `loradex serve --processes 2`
    python benchmarks/api_load.py --url http://127.0.0.1:8000 --pid PID   # a running server
    LORADEX_TEXT_EMBEDDER_BACKEND=torch python benchmarks/api_load.py     # MiniLM on torch
    LORADEX_TEXT_EMBEDDER=minilm-int8 python benchmarks/api_load.py      # int8 MiniLM
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT.parent / "shared" / "zoo"
TARGET_RPS, TARGET_P99_MS = 300.0, 100.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _loradex(data_dir: Path, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "hub.cli", "--data-dir", str(data_dir), *args]
    return subprocess.Popen(cmd, cwd=ROOT, **kw)  # type: ignore[call-overload]


def start_server(data_dir: Path, zoo: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    if _loradex(data_dir, "import-zoo", str(zoo), stdout=subprocess.DEVNULL).wait() != 0:
        raise SystemExit("import-zoo failed")
    port = _free_port()
    proc = _loradex(data_dir, "serve", "--port", str(port), "--log-level", "warning", *extra)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            status, _ = asyncio.run(_one_get("127.0.0.1", port, "/health"))
            if status == 200:
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not come up within 90 s")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | None) -> float:
    """user+system CPU of a process and its live descendants (Linux /proc: `serve --processes`
    forks workers); the server's CPU per request predicts its throughput on an idle machine
    even when the benchmark box is shared."""
    if pid is None:
        return float("nan")
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
    family, grew = {pid}, True
    while grew:
        kids = {p for p, pp in parent.items() if pp in family} - family
        family |= kids
        grew = bool(kids)
    total = 0.0
    for member in family:
        try:
            fields = _stat(member)
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# -- a lean keep-alive HTTP/1.1 client ----------------------------------------------------------
class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, host)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def _one_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    conn = await Connection.open(host, port)
    try:
        return await conn.get(path)
    finally:
        conn.close()


# -- query mixes ----------------------------------------------------------------------------------
def task_descriptions(zoo: Path) -> list[str]:
    manifest = json.loads((zoo / "manifest.json").read_text())
    records = manifest["adapters"] if isinstance(manifest, dict) else manifest
    return [d for r in records for d in r["descriptions"]]


PREFIXES = ["", "I need an adapter that can ", "find a LoRA to ", "model for: ", "help me "]


def distinct_queries(descriptions: list[str], seed: int) -> Iterator[str]:
    """Never the same string twice (a serial number keeps them apart), worded like users."""
    rng = random.Random(seed)
    for n in itertools.count():
        desc = rng.choice(descriptions).rstrip(".?")
        yield f"{rng.choice(PREFIXES)}{desc[0].lower()}{desc[1:]} (case {seed}-{n})"


def search_path(query: str, k: int = 10) -> str:
    return f"/search?q={quote(query)}&k={k}&mode=text"


def warm_set(descriptions: list[str]) -> list[str]:
    return [search_path(d) for d in descriptions[:16]]


def mixes(descriptions: list[str]) -> dict[str, Callable[[], str]]:
    warm_set_paths = warm_set(descriptions)
    warm = itertools.cycle(warm_set_paths)
    cold = distinct_queries(descriptions, seed=1)
    mixed_cold = distinct_queries(descriptions, seed=2)
    rng = random.Random(3)
    mixed_warm = itertools.cycle(warm_set_paths)
    return {
        "/health": lambda: "/health",
        "/adapters?limit=20": lambda: "/adapters?limit=20",
        "search warm (16 q)": lambda: next(warm),
        "search cold (new q)": lambda: search_path(next(cold)),
        "search mix 80/20": lambda: (
            next(mixed_warm) if rng.random() < 0.8 else search_path(next(mixed_cold))
        ),
    }


# -- the load loop --------------------------------------------------------------------------------
async def load(
    url: str,
    name: str,
    next_path: Callable[[], str],
    requests: int,
    concurrency: int,
    seconds: float,
    pid: int | None,
) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors = 0
    issued = 0

    async def client_loop(conn: Connection, deadline: float) -> None:
        nonlocal errors, issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            path = next_path()
            t0 = time.perf_counter()
            status, _ = await conn.get(path)
            latencies.append(time.perf_counter() - t0)
            errors += status != 200

    conns = [await Connection.open(host, port) for _ in range(concurrency)]
    try:
        for conn in conns:  # open the connections before timing
            await conn.get("/health")
        t0, cpu0, own0 = time.perf_counter(), cpu_seconds(pid), time.process_time()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(client_loop(conn, deadline) for conn in conns))
        elapsed = time.perf_counter() - t0
        server_cpu, client_cpu = cpu_seconds(pid) - cpu0, time.process_time() - own0
    finally:
        for conn in conns:
            conn.close()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "name": name,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "server_cpu_ms": server_cpu / len(latencies) * 1000,
        "client_cpu_ms": client_cpu / len(latencies) * 1000,
    }


def report(rows: list[dict], concurrency: int, load_before: float, processes: int | None) -> None:
    load_after = os.getloadavg()[0]
    served = f"`serve --processes {processes}`, " if processes else ""
    embedder = os.environ.get("LORADEX_TEXT_EMBEDDER", "minilm")
    backend = os.environ.get("LORADEX_TEXT_EMBEDDER_BACKEND", "auto")
    print(f"text embedder {embedder} (LORADEX_TEXT_EMBEDDER), backend {backend} ", end="")
    print("(LORADEX_TEXT_EMBEDDER_BACKEND), ", end="")
    print(f"{served}{concurrency} concurrent clients, loopback, {os.cpu_count()} CPUs, ", end="")
    print(f"load average {load_before:.1f} before / {load_after:.1f} after")
    print(
        f"{'endpoint':<22}{'requests':>9}{'errors':>7}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'server CPU ms/req':>19}{'client CPU ms/req':>19}"
    )
    for r in rows:
        print(
            f"{r['name']:<22}{r['requests']:>9}{r['errors']:>7}{r['rps']:>8.0f}"
            f"{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}"
            f"{r['server_cpu_ms']:>19.2f}{r['client_cpu_ms']:>19.2f}"
        )
    for r in rows:
        if r["name"].startswith("search"):
            ok = r["rps"] >= TARGET_RPS and r["p99_ms"] <= TARGET_P99_MS and not r["errors"]
            print(
                f"target (>= {TARGET_RPS:.0f} req/s, p99 <= {TARGET_P99_MS:.0f} ms) for "
                f"{r['name']}: {'met' if ok else 'NOT met'}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="per row")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0, help="time limit per row")
    ap.add_argument("--zoo", type=Path, default=ZOO)
    ap.add_argument("--only", default=None, help="comma-separated row names to run")
    ap.add_argument("--url", default=None, help="use this running server instead")
    ap.add_argument("--pid", type=int, default=None, help="its process id (for CPU figures)")
    ap.add_argument("--processes", type=int, default=1, help="`serve --processes`")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `serve` argument")
    args = ap.parse_args()
    args.serve_arg += ["--processes", str(args.processes)]

    descriptions = task_descriptions(args.zoo)
    rows_to_run = mixes(descriptions)
    if args.only:
        wanted = set(args.only.split(","))
        rows_to_run = {k: v for k, v in rows_to_run.items() if k in wanted}
    proc = None
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="loradex-load-") as tmp:
        url, pid = args.url, args.pid
        if url is None:
            os.environ.pop("LORADEX_DATABASE_URL", None)  # the embedded default: SQLite
            proc, url = start_server(Path(tmp) / "home", args.zoo, args.serve_arg)
            pid = proc.pid
            time.sleep(5 * args.processes)  # each process loads MiniLM after start-up
        try:
            # Not part of the figures: the server loads MiniLM and embeds the catalog, and
            # the warm row's queries are sent once.
            paths = [search_path("warm up"), *warm_set(descriptions)]
            asyncio.run(_warm_up(url, paths, args.concurrency))
            rows = [
                asyncio.run(
                    load(url, name, nxt, args.requests, args.concurrency, args.seconds, pid)
                )
                for name, nxt in rows_to_run.items()
            ]
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    report(rows, args.concurrency, load_before, args.processes if args.url is None else None)


async def _warm_up(url: str, paths: list[str], connections: int) -> None:
    """Send every path over each of ``connections`` connections: with `--processes N` each
    connection lands in one process, and every process must have seen the warm queries."""
    parts = urlsplit(url)
    conns = [
        await Connection.open(parts.hostname or "", parts.port or 80) for _ in range(connections)
    ]
    try:
        for conn in conns:
            for path in paths:
                status, body = await conn.get(path)
                if status != 200:
                    raise SystemExit(f"warm-up search failed: {status} {body[:300]!r}")
    finally:
        for conn in conns:
            conn.close()


if __name__ == "__main__":
    main()
