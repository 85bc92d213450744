"""Web catalog page latency, next to the REST call that reads the same rows.

Builds a temp catalog of N synthetic adapters (zoo-shaped: SmolLM2 q_proj/v_proj of 30 layers
would make N large catalogs slow to build, so 2-layer tiny adapters with varied tags, ranks,
licenses and sources; page cost is dominated by the catalog read and the facet counting, not
by adapter size), then times, in-process through the app (TestClient, no network):

- ``GET /ui/`` (browse: every latest version read, five facets counted, one page rendered)
  next to its baseline ``GET /adapters?limit=20`` (the REST list: one page, no facets);
- ``GET /ui/adapters/NAME`` cold (spectra computed and cached) and warm (cache hit) on a
  zoo adapter (60 modules) when ../shared/zoo is present.

    python benchmarks/web_pages.py [--n 2000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from api import create_app  # noqa: E402
from hub.config import Settings  # noqa: E402
from hub.core.models import AdapterMeta  # noqa: E402
from hub.services.container import Container  # noqa: E402
from storage.peft_format import read_peft_bytes  # noqa: E402
from storage.safetensors_io import serialize_safetensors  # noqa: E402

ZOO = ROOT.parent / "shared" / "zoo"


def _tiny(seed: int, r: int) -> tuple[bytes, bytes]:
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(2):
        for t, (d_in, d_out) in {"q_proj": (64, 64), "v_proj": (64, 32)}.items():
            key = f"base_model.model.model.layers.{layer}.self_attn.{t}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((r, d_in)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((d_out, r)).astype(np.float32)
    config = {"peft_type": "LORA", "base_model_name_or_path": "tiny-llama", "r": r,
              "lora_alpha": 2 * r, "target_modules": ["q_proj", "v_proj"]}  # fmt: skip
    return json.dumps(config).encode(), serialize_safetensors(tensors)


def build(container: Container, n: int) -> None:
    families = ["numbers", "lookup", "words", "letters", "format", "classify"]
    batch = []
    for i in range(n):
        cfg, weights = _tiny(i, (4, 8, 16)[i % 3])
        meta = AdapterMeta(
            name=f"adapter-{i:05d}",
            description=f"synthetic adapter {i} for {families[i % 6]} tasks",
            tags=[families[i % 6], "bench"],
            license=("mit", "apache-2.0", None)[i % 3],
        )
        batch.append((read_peft_bytes(cfg, weights), meta, {"source": ("upload", "zoo")[i % 2]}))
        if len(batch) == 200:
            container.registry.add_many(batch)
            batch = []
    if batch:
        container.registry.add_many(batch)


def timed(client: TestClient, url: str, repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = client.get(url)
        samples.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    return statistics.median(samples), max(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        container = Container(Settings(home=Path(tmp) / "home", text_embedder="hash"))
        t0 = time.perf_counter()
        build(container, args.n)
        zoo_name = None
        if (ZOO / "manifest.json").is_file():
            from hub.services.zoo import import_zoo

            import_zoo(container.registry, ZOO)
            zoo_name = "capital_of"
        print(f"catalog: {args.n} synthetic adapters" + (" + 49 zoo" if zoo_name else ""),
              f"built in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        with TestClient(create_app(container, run_jobs=False)) as client:
            client.get("/ui/")  # warm imports and templates
            client.get("/ui/search?q=warm&mode=text")  # build the text index outside timings
            rows = [
                ("GET /adapters?limit=20 (REST baseline)", "/adapters?limit=20"),
                ("GET /ui/ (browse, 5 facets)", "/ui/"),
                ("GET /ui/?tag=numbers&rank=8 (filtered)", "/ui/?tag=numbers&rank=8"),
            ]
            for label, url in rows:
                p50, worst = timed(client, url, args.repeats)
                print(f"{label:<44} p50 {p50:8.1f} ms   max {worst:8.1f} ms")
            if zoo_name:
                t0 = time.perf_counter()
                client.get(f"/ui/adapters/{zoo_name}")
                cold = (time.perf_counter() - t0) * 1000
                p50, worst = timed(client, f"/ui/adapters/{zoo_name}", args.repeats)
                print(f"{'GET /ui/adapters/capital_of cold (spectra)':<44} {cold:8.1f} ms")
                print(f"{'GET /ui/adapters/capital_of warm':<44} p50 {p50:8.1f} ms   "
                      f"max {worst:8.1f} ms")  # fmt: skip
        print(f"load average: {os.getloadavg()}")
        container.catalog.close()


if __name__ == "__main__":
    main()
