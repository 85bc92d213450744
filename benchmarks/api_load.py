"""API load benchmark: `GET /adapters?limit=20` over loopback at 16 concurrent clients.

Starts `loradex serve` as a subprocess on 127.0.0.1 over a temp data dir with the zoo imported
(`loradex import-zoo ../shared/zoo`), then drives it with an asyncio httpx client (one keep-alive
connection per simulated client). Bounded by a request count and a time limit. Prints req/s and
p50/p99 latency next to the issue's target (>= 300 req/s, p99 <= 100 ms on the 2-core CI box);
`/health` (no catalog query) is measured the same way as the framework's own baseline.

    python benchmarks/api_load.py [--requests 4000] [--concurrency 16] [--seconds 30]
    python benchmarks/api_load.py --url http://127.0.0.1:8000   # an already running server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

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


def start_server(data_dir: Path, zoo: Path) -> tuple[subprocess.Popen[bytes], str]:
    if _loradex(data_dir, "import-zoo", str(zoo), stdout=subprocess.DEVNULL).wait() != 0:
        raise SystemExit("import-zoo failed")
    port = _free_port()
    proc = _loradex(data_dir, "serve", "--port", str(port), "--log-level", "warning")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not come up within 60 s")


def cpu_seconds(pid: int | None) -> float:
    """user+system CPU of a process (Linux /proc); the server's CPU per request predicts its
    throughput on an idle machine even when the benchmark box is shared."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    url: str, path: str, requests: int, concurrency: int, seconds: float, pid: int | None
) -> dict:
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors, issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            t0 = time.perf_counter()
            r = await client.get(path)
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for _ in range(concurrency):  # open the connections before timing
            await client.get(path)
        t0, cpu0, own0 = time.perf_counter(), cpu_seconds(pid), time.process_time()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        server_cpu, client_cpu = cpu_seconds(pid) - cpu0, time.process_time() - own0
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "path": path,
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "server_cpu_ms": server_cpu / len(latencies) * 1000,
        "client_cpu_ms": client_cpu / len(latencies) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="per endpoint")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30.0, help="time limit per endpoint")
    ap.add_argument("--zoo", type=Path, default=ZOO)
    ap.add_argument("--url", default=None, help="use this running server instead")
    ap.add_argument("--pid", type=int, default=None, help="its process id (for CPU figures)")
    args = ap.parse_args()

    proc = None
    with tempfile.TemporaryDirectory(prefix="loradex-load-") as tmp:
        url, pid = args.url, args.pid
        if url is None:
            os.environ.pop("LORADEX_DATABASE_URL", None)  # the embedded default: SQLite
            proc, url = start_server(Path(tmp) / "home", args.zoo)
            pid = proc.pid
        try:
            rows = [
                asyncio.run(load(url, p, args.requests, args.concurrency, args.seconds, pid))
                for p in ("/adapters?limit=20", "/health")
            ]
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    load_avg = os.getloadavg()[0]
    print(f"{args.concurrency} concurrent clients, loopback, {os.cpu_count()} CPUs, ", end="")
    print(f"load average {load_avg:.1f} (figures are only comparable on an idle machine)")
    print(
        f"{'endpoint':<22}{'requests':>9}{'errors':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU ms/req':>19}{'client CPU ms/req':>19}"
    )
    for r in rows:
        print(
            f"{r['path']:<22}{r['requests']:>9}{r['errors']:>7}{r['rps']:>9.0f}"
            f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['server_cpu_ms']:>19.2f}{r['client_cpu_ms']:>19.2f}"
        )
    main_row = rows[0]
    ok = main_row["rps"] >= TARGET_RPS and main_row["p99_ms"] <= TARGET_P99_MS
    print(
        f"target: >= {TARGET_RPS:.0f} req/s and p99 <= {TARGET_P99_MS:.0f} ms -> "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
