"""Index sides follow the catalog incrementally: embed only what changed, reuse unchanged
cards, never mistake a reused row id for the old version, heal a torn save."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hub.services.search_indexes import BackgroundSaver, IndexSide
from retrieval.embedders import HashEmbedder
from retrieval.index import IndexMismatchError
from storage.catalog.search_queries import LatestVersion

EMB = HashEmbedder(dim=32)
PARAMS = {"backend": "flat"}


class Texts:
    """Card texts by adapter name; counts what was embedded."""

    def __init__(self, **cards: str) -> None:
        self.cards = dict(cards)
        self.embedded: list[int] = []

    def hashes(self, versions):
        return [f"h:{self.cards[v.name]}" for v in versions]

    def embed(self, versions):
        self.embedded += [v.id for v in versions]
        return EMB.embed([self.cards[v.name] for v in versions]), self.hashes(versions)


def v(id_: int, name: str, digest: str = "d") -> LatestVersion:
    return LatestVersion(id_, name, f"{digest}{id_}", None)


def side(tmp_path) -> IndexSide:
    return IndexSide("text", tmp_path / "text.faiss", EMB.embedder_id, EMB.dim, PARAMS)


def test_apply_embeds_only_changes_and_reuses_unchanged_cards(tmp_path):
    s, texts = side(tmp_path), Texts(add="add two numbers", rev="reverse a word")
    assert s.apply([v(1, "add"), v(2, "rev")], texts.embed, texts.hashes) == {
        "added": 2,
        "reused": 0,
        "removed": 0,
    }
    old = s.index.vectors([1])[0]
    # add@2 replaces add@1 with the same card: the stored vector moves, nothing is embedded
    texts.embedded.clear()
    counts = s.apply([v(3, "add"), v(2, "rev")], texts.embed, texts.hashes)
    assert counts == {"added": 0, "reused": 1, "removed": 1} and texts.embedded == []
    assert 1 not in s.index and s.keys[3] == "add@d3"
    np.testing.assert_array_equal(s.index.vectors([3])[0], old)
    # rev@2 comes with a new description: embedded again
    texts.cards["rev"] = "write the word backwards"
    counts = s.apply([v(3, "add"), v(4, "rev")], texts.embed, texts.hashes)
    assert counts == {"added": 1, "reused": 0, "removed": 1} and texts.embedded == [4]
    # nothing changed: nothing happens
    assert s.apply([v(3, "add"), v(4, "rev")], texts.embed, texts.hashes)["added"] == 0
    # deleted adapter
    assert s.apply([v(3, "add")], texts.embed, texts.hashes)["removed"] == 1 and s.count == 1


def test_reused_row_id_is_a_new_version(tmp_path):
    """SQLite can hand a deleted max row id to the next insert: the key (name@digest) tells."""
    s, texts = side(tmp_path), Texts(add="add two numbers", sun="is it sunny")
    s.apply([v(2, "add")], texts.embed, texts.hashes)  # add@... is row 2, then deleted
    texts.embedded.clear()
    s.apply([LatestVersion(2, "sun", "other", None)], texts.embed, texts.hashes)
    assert texts.embedded == [2] and s.keys[2] == "sun@other"
    _, ids = s.index.search(EMB.embed(["is it sunny"]), 1)
    assert ids[0, 0] == 2


def test_save_load_round_trip_and_torn_entries_heal(tmp_path):
    s, texts = side(tmp_path), Texts(a="alpha task", b="beta task", c="gamma task")
    s.apply([v(1, "a"), v(2, "b"), v(3, "c")], texts.embed, texts.hashes)
    fresh = s.save()
    assert fresh == {1: "h:alpha task", 2: "h:beta task", 3: "h:gamma task"}
    assert s.save() == {}  # only newly durable hashes are reported (catalog mirror)
    again = side(tmp_path)
    assert again.load() and again.keys == s.keys and again.hashes == s.hashes
    # a crash between the index write and the entries write: entries lack id 3
    doc = json.loads(s.entries_path.read_text())
    del doc["keys"]["3"]
    s.entries_path.write_text(json.dumps(doc))
    torn = side(tmp_path)
    torn.load()
    assert 3 not in torn.index and torn.count == 2  # orphan vector dropped...
    texts.embedded.clear()
    torn.apply([v(1, "a"), v(2, "b"), v(3, "c")], texts.embed, texts.hashes)
    assert texts.embedded == [3]  # ...and re-embedded, alone
    s.entries_path.write_text("{not json")
    garbled = side(tmp_path)
    garbled.load()
    assert garbled.count == 0  # unknown identities: everything is re-checked


def test_foreign_or_missing_files(tmp_path):
    assert side(tmp_path).load() is False  # nothing saved yet
    s, texts = side(tmp_path), Texts(a="alpha")
    s.apply([v(1, "a")], texts.embed, texts.hashes)
    s.save()
    other = IndexSide("text", s.path, "hash-v1/64", 64, PARAMS)
    with pytest.raises(IndexMismatchError, match="loradex reindex"):
        other.load()


def test_background_saver_coalesces_and_flushes(tmp_path):
    saved = []
    saver = BackgroundSaver(on_saved=lambda side, fresh: saved.append((side.kind, dict(fresh))))
    s, texts = side(tmp_path), Texts(a="alpha", b="beta")
    s.apply([v(1, "a")], texts.embed, texts.hashes)
    saver.request(s)
    s.apply([v(1, "a"), v(2, "b")], texts.embed, texts.hashes)
    saver.request(s)
    saver.flush(10)
    assert s.path.exists() and s.entries_path.exists() and saver.errors == []
    assert {i for _, fresh in saved for i in fresh} == {1, 2}
    loaded = side(tmp_path)
    loaded.load()
    assert loaded.count == 2


def test_versions_that_cannot_be_embedded_are_left_out(tmp_path):
    s, texts = side(tmp_path), Texts(a="alpha", b="beta")

    def embed(versions):
        vecs, hashes = texts.embed(versions)
        vecs[[i for i, v in enumerate(versions) if v.name == "b"]] = np.nan
        return vecs, hashes

    assert s.apply([v(1, "a"), v(2, "b")], embed, texts.hashes)["added"] == 1
    assert 2 not in s.index and 2 not in s.keys and s.count == 1


def test_apply_new_replaces_each_adapters_previous_latest(tmp_path):
    """The delta path (versions added, none deleted) gives the same index as a full apply."""
    texts = Texts(add="add two numbers", rev="reverse a word", new="a new task")
    s = side(tmp_path)
    s.apply([v(1, "add"), v(2, "rev")], texts.embed, texts.hashes)
    texts.embedded.clear()
    counts = s.apply_new([v(3, "add"), v(4, "new"), v(5, "add")], texts.embed, texts.hashes)
    assert counts == {"added": 1, "reused": 1, "removed": 1}  # add@5 reuses add@1's card
    assert sorted(s.keys) == [2, 4, 5] and s.by_name == {"rev": 2, "new": 4, "add": 5}
    assert texts.embedded == [4]


def test_an_apply_waits_for_the_copy_of_a_save_not_for_its_writing(tmp_path, monkeypatch):
    """A save held the side's lock while it serialised, hashed and fsynced the index files
    (0.8 s at 10^5 HNSW vectors), so an adapter added or a card edited just after another
    one waited that long to become searchable. Now the lock covers the copy only; the saved
    files and entries are those of the copy, and the next save writes the change."""
    import threading
    import time

    import retrieval.index as index_mod

    s, texts = side(tmp_path), Texts(add="add two numbers", rev="reverse a word")
    s.apply([v(1, "add")], texts.embed, texts.hashes)
    writing = threading.Event()
    real_write = index_mod.IndexSnapshot.write

    def slow_write(self, path):
        writing.set()
        time.sleep(1.0)
        real_write(self, path)

    monkeypatch.setattr(index_mod.IndexSnapshot, "write", slow_write)
    saver = threading.Thread(target=s.save)
    saver.start()
    assert writing.wait(10)
    t0 = time.perf_counter()
    s.apply_new([v(2, "rev")], texts.embed, texts.hashes)
    waited = time.perf_counter() - t0
    saver.join()
    assert waited < 0.5, waited
    entries = json.loads(s.entries_path.read_text())
    assert entries["keys"] == {"1": "add@d1"}  # the copy's keys, matching the saved index
    assert s.unsaved_hashes == {2: "h:reverse a word"}  # durable at the next save
    monkeypatch.setattr(index_mod.IndexSnapshot, "write", real_write)
    assert s.save() == {2: "h:reverse a word"}
