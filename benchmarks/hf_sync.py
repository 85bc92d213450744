"""Hub sync benchmark: pull and push the real zoo adapters through the real huggingface_hub client
against the loopback fake Hub (tests/hf_fake_hub.py), next to the same registrations done from
local directories (`loradex add`'s path: strict validation, sha256, fsync'd blob, one commit).

Phases, one fresh catalog each:

- `local add`   baseline: RegistryService.add_path on each zoo directory (no network)
- `dry run`     sync pull --dry-run by base-model filter: list, pin, the config and the card
                checked, no weights downloaded, nothing registered (the summary says how many MB
                the pull would download)
- `pull`        sync pull by base-model filter: list (paged), pin, download config + weights +
                card at the sha, validate, register
- `re-pull`     the same pull again: every repository skipped by revision, nothing downloaded
- `card, no sha` each repository gets a commit that changes only README.md, then the same
                pull with the Hub's LFS sha256 hidden: the weights are downloaded to find them
                equal (the baseline: every pull did this before the sha256 was used)
- `card-only`   another such commit, the same pull: skipped, the weights known by their LFS
                sha256, only the card fetched (to warn that it differs)
- `--update-card` another such commit, pulled with --update-card: the new cards are taken
- `misfit`      a fresh catalog whose registered SmolLM2 base has another hidden size: every
                pull is refused from the config and the weights' header (a ranged read), no
                weights downloaded; `misfit, full` the same with the header read failing, so
                the weights are downloaded and refused after (the baseline: every pull did
                this before the header check)
- `push`        push every adapter to a new repository (create repo + one commit each)

Prints adapters/s and MB/s per phase, HTTP requests per adapter and the machine load. The fake
Hub runs in this process (threads), so the figures include the server's own CPU on loopback:
they bound the client-side overhead per adapter, not a real network's latency.

    python benchmarks/hf_sync.py [--n 49]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.core.errors import HfHubError  # noqa: E402
from hub.core.models import AdapterMeta  # noqa: E402
from hub.core.names import AdapterRef  # noqa: E402
from hub.services.sync import PullTargets  # noqa: E402
from tests.api_helpers import make_container  # noqa: E402
from tests.hf_fake_hub import FakeHub  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT.parent / "shared" / "zoo"
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
CARD = "---\nbase_model: {base}\nlicense: apache-2.0\ntags: [{family}]\n---\n\n{description}\n"


def zoo(n: int) -> list[tuple[str, Path, dict]]:
    manifest = json.loads((ZOO / "manifest.json").read_text())
    return [(r["task"], ZOO / r["adapter"], r) for r in manifest["adapters"][:n]]


def row(phase: str, count: int, seconds: float, nbytes: int, requests: int | None) -> str:
    per = f"{requests / max(count, 1):6.1f}" if requests is not None else "     -"
    return (
        f"{phase:13} {count:4d} adapters {seconds:7.2f} s {count / seconds:8.1f} adapters/s "
        f"{nbytes / seconds / 1e6:8.1f} MB/s  {per} req/adapter"
    )


def _unreadable_header(snapshot):
    raise HfHubError("header read refused (benchmark baseline)", code="hf_error")


def _without_sha256(resolve):
    """A Hub that lists no LFS sha256 for the weights: the weights are downloaded to compare,
    as every pull of a new revision did before the sha256 was used (the baseline row)."""

    def resolved(repo_id, revision=None):
        snapshot = resolve(repo_id, revision)
        files = {n: dataclasses.replace(f, sha256=None) for n, f in snapshot.files.items()}
        return dataclasses.replace(snapshot, files=files)

    return resolved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=49, help="zoo adapters to use (max 49)")
    args = parser.parse_args()
    adapters = zoo(args.n)
    nbytes = sum((d / "adapter_model.safetensors").stat().st_size for _, d, _ in adapters)
    root = Path(tempfile.mkdtemp(prefix="loradex-bench-hf-"))
    hub = FakeHub(root / "hub", tokens={"tok": "zoo"}, page_size=20).start()
    for task, d, rec in adapters:
        card = CARD.format(base=BASE, family=rec["family"], description=rec["descriptions"][0])
        files = {p.name: p.read_bytes() for p in d.iterdir()}
        hub.add_repo(f"zoo/{task.replace('_', '-')}", {**files, "README.md": card.encode()})

    print(f"load average {os.getloadavg()}; {len(adapters)} zoo adapters, {nbytes / 1e6:.1f} MB")
    local = make_container(root / "local")
    t = time.perf_counter()
    for task, d, _ in adapters:
        local.registry.add_path(d, AdapterMeta(name=task))
    print(row("local add", len(adapters), time.perf_counter() - t, nbytes, None))

    synced = make_container(root / "synced", hf_endpoint=hub.url, hf_token="tok")
    for phase in ("dry run", "pull", "re-pull"):
        targets = PullTargets.checked(
            base_model=BASE, limit=len(adapters), dry_run=phase == "dry run"
        )
        served, before, t = len(hub.served), len(hub.log), time.perf_counter()
        report = synced.sync.pull(targets)
        seconds = time.perf_counter() - t
        moved = sum(n for path, n in hub.served[served:] if path.endswith(".safetensors"))
        print(row(phase, len(report.outcomes), seconds, moved, len(hub.log) - before))
        print(f"{'':13} {report.summary()}")

    client = synced.sync.client
    resolve = client.resolve
    rounds = [
        ("card, no sha", False, False),
        ("card-only", True, False),
        ("--update-card", True, True),
    ]
    for i, (phase, lfs_sha, update_card) in enumerate(rounds, start=1):
        for task, _, rec in adapters:  # a commit that changes README.md only
            text = rec["descriptions"][1 + i % 2]  # never [0], the pulled card's
            card = CARD.format(base=BASE, family=rec["family"], description=text)
            hub.commit(f"zoo/{task.replace('_', '-')}", {"README.md": card.encode()})
        client.resolve = resolve if lfs_sha else _without_sha256(resolve)
        targets = PullTargets.checked(base_model=BASE, limit=len(adapters), update_card=update_card)
        before, t = len(hub.log), time.perf_counter()
        report = synced.sync.pull(targets)
        seconds, moved = time.perf_counter() - t, 0 if lfs_sha else nbytes
        print(row(phase, len(report.outcomes), seconds, moved, len(hub.log) - before))
        print(f"{'':13} {report.summary()}")
    client.resolve = resolve

    config = json.loads((ROOT / "hub" / "data" / "smollm2-135m-instruct.config.json").read_text())
    for phase, header_read in (("misfit", True), ("misfit, full", False)):
        misfit = make_container(root / phase, hf_endpoint=hub.url, hf_token="tok")
        misfit.registry.register_base_model(BASE, {**config, "hidden_size": 512})
        if not header_read:
            misfit.sync.client.weights_header = _unreadable_header
        served, before, t = len(hub.served), len(hub.log), time.perf_counter()
        report = misfit.sync.pull(PullTargets.checked(base_model=BASE, limit=len(adapters)))
        seconds = time.perf_counter() - t
        weights = sum(n for path, n in hub.served[served:] if path.endswith(".safetensors"))
        print(row(phase, len(report.outcomes), seconds, weights, len(hub.log) - before))
        codes = {o.error.code for o in report.failed if o.error}
        print(f"{'':13} {report.summary()}; {weights / 1e6:.2f} MB of weights served; {codes}")

    before, t = len(hub.log), time.perf_counter()
    for item in synced.catalog.list_items(limit=10_000)[0]:
        synced.sync.push(AdapterRef(item.name), f"zoo/{item.name.split('--')[1]}-copy")
    print(row("push", len(adapters), time.perf_counter() - t, nbytes, len(hub.log) - before))
    print(f"load average {os.getloadavg()}")
    hub.stop()


if __name__ == "__main__":
    main()
