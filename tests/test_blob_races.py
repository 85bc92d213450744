"""An `rm` racing an `add` of the same weights: the blob the new row names must survive.

Both adapters share one content-addressed blob. The add stores (or re-touches) it, then commits
its row; an `rm` of the other adapter between those two steps found it unreferenced and deleted
it, leaving a committed version without weights (`verify`: bad blob; `export`: blob_missing).
"""

from __future__ import annotations

import threading

from hub.core.models import AdapterMeta
from hub.core.names import AdapterRef
from tests.api_helpers import make_container
from tests.factories import write_adapter_dir


def test_rm_waits_for_an_add_between_its_blob_and_its_row(tmp_path):
    container = make_container(tmp_path / "home", text_embedder="hash")
    registry = container.registry
    src = write_adapter_dir(tmp_path / "w", seed=3)
    first = registry.add_path(src, AdapterMeta(name="ra"))
    stored, release = threading.Event(), threading.Event()
    commit = registry.catalog.register_version

    def slow_commit(*args, **kwargs):
        stored.set()  # the blob is stored (touched): the row is not committed yet
        assert release.wait(10)
        return commit(*args, **kwargs)

    registry.catalog.register_version = slow_commit  # type: ignore[method-assign]
    added: list = []
    adder = threading.Thread(
        target=lambda: added.append(registry.add_path(src, AdapterMeta(name="rb")))
    )
    adder.start()
    assert stored.wait(10)
    remover = threading.Thread(target=lambda: registry.rm(AdapterRef("ra", None)))
    remover.start()
    remover.join(0.5)
    assert remover.is_alive()  # it waits: deleting now would leave rb without its blob
    release.set()
    adder.join(10)
    remover.join(10)
    registry.catalog.register_version = commit  # type: ignore[method-assign]
    assert added[0].item.digest == first.item.digest
    assert registry.blobs.exists(first.item.digest)
    assert registry.verify() == []
    assert registry.load(AdapterRef("rb", None)).adapter.modules
