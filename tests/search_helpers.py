"""A small catalog of three described adapters, for search tests through the CLI and the
service (hash text embedder: deterministic, no model files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli_helpers import cli
from tests.factories import write_adapter_dir

CARDS = {
    "french": "Translate a colour name into French.",
    "capitals": "Name the capital city of a country.",
    "reverse": "Reverse the letters of a word.",
}


def search_home(tmp_path: Path) -> Path:
    """A CLI data dir holding the three CARDS (tags: lookup / letters); the caller sets
    ``LORADEX_TEXT_EMBEDDER=hash``."""
    home = tmp_path / "home"
    for i, (name, desc) in enumerate(CARDS.items()):
        src = write_adapter_dir(tmp_path / name, seed=i)
        tag = "letters" if name == "reverse" else "lookup"
        run = cli(home, "add", src, "--name", name, "--description", desc, "--tag", tag)
        assert run.code == 0, run.stderr
    return home


def service_home(tmp_path: Path, n: int = 3) -> Any:
    """A container (hash embedder) whose registry holds the first ``n`` CARDS, tag ``t``."""
    from hub.core.models import AdapterMeta
    from tests.api_helpers import make_container

    container = make_container(tmp_path / "svc", text_embedder="hash")
    for i, (name, desc) in enumerate(list(CARDS.items())[:n]):
        src = write_adapter_dir(tmp_path / f"src{i}", seed=i)
        container.registry.add_path(src, AdapterMeta(name=name, description=desc, tags=["t"]))
    return container


def names(run: Any) -> list[str]:
    assert run.code == 0, run.stderr
    return [d["name"] for d in run.json()["data"]]


def top_names(service: Any, query: str, **kw: Any) -> list[str]:
    return [r.item.name for r in service.search(query, mode="text", **kw)]
