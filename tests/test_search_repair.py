"""Broken or outdated derived search data: a clear error naming the repair, text search kept
alive where it can be, and the named repair (`reindex`, `encoder train`) actually repairing."""

from __future__ import annotations

import json

import pytest

from hub.core.errors import ConflictError, HubError
from hub.core.names import AdapterRef
from tests.cli_helpers import cli
from tests.factories import write_adapter_dir
from tests.search_helpers import names, search_home, service_home


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "hash")
    return search_home(tmp_path)


def _edit_sidecar(home, edit) -> None:
    path = home / "index" / "text.faiss.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(edit(meta)))


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m: {k: v for k, v in m.items() if k != "ann_threshold"}, id="no-field"),
        pytest.param(lambda m: {**m, "params": [1]}, id="params-not-object"),
        pytest.param(lambda m: {**m, "ann_threshold": "abc"}, id="threshold-not-int"),
        pytest.param(lambda m: {**m, "backend": "hnsw"}, id="backend-of-other-bytes"),
        pytest.param(lambda m: {**m, "backend": "nosuch"}, id="unknown-backend"),
        pytest.param(lambda m: {**m, "backend_policy": "nosuch"}, id="unknown-policy"),
        pytest.param(lambda m: [m], id="not-an-object"),
    ],
)
def test_a_hand_edited_sidecar_is_stale_and_reindex_heals_it(home, edit):
    assert cli(home, "search", "capital").code == 0  # index built and saved
    _edit_sidecar(home, edit)
    run = cli(home, "search", "capital")
    assert run.code == 1, run.stderr
    assert "[index_stale]" in run.stderr and "loradex reindex" in run.stderr
    healed = cli(home, "reindex", "--json")
    assert healed.code == 0, healed.stderr
    assert healed.json()["text_count"] == 3
    assert names(cli(home, "search", "capital city", "--k", "1", "--json")) == ["capitals"]


def test_reindex_reuses_unchanged_card_vectors(home):
    assert cli(home, "search", "capital").code == 0
    report = cli(home, "reindex", "--json").json()
    assert (report["text_added"], report["text_count"]) == (0, 3)  # nothing re-embedded


def test_an_unreadable_encoder_leaves_text_search_working_and_encoder_train_repairs(home, caplog):
    trained = cli(home, "encoder", "train", "--json")
    assert trained.code == 0, trained.stderr
    (home / "index" / "encoder" / "encoder.safetensors").write_bytes(b"")  # truncated
    text = cli(home, "search", "capital city", "--mode", "text", "--k", "1", "--json")
    assert names(text) == ["capitals"]
    hybrid = cli(home, "search", "capital city", "--k", "1", "--json")
    assert names(hybrid) == ["capitals"] and hybrid.json()["data"][0]["why"] == "text"
    assert "weight encoder not used" in caplog.text  # the fallback is logged, not silent
    for args in (["search", "capital", "--mode", "weights"], ["similar", "french"]):
        run = cli(home, *args)
        assert run.code == 1 and "[encoder_unavailable]" in run.stderr, run.stderr
        assert "loradex encoder train" in run.stderr
    assert cli(home, "reindex").code == 0  # the encoder does not block a text rebuild
    assert cli(home, "encoder", "train").code == 0
    weights = cli(home, "search", "capital", "--mode", "weights", "--json")
    assert weights.code == 0 and len(names(weights)) == 3
    assert cli(home, "similar", "french").code == 0


def test_an_undescribed_adapter_added_after_training_is_found_by_its_weights(home, tmp_path):
    assert cli(home, "encoder", "train").code == 0
    src = write_adapter_dir(tmp_path / "mystery", seed=11)
    assert cli(home, "add", src, "--name", "mystery").code == 0  # no description, no tags
    run = cli(home, "search", "anything at all", "--mode", "weights", "--k", "10", "--json")
    hits = {d["name"]: d for d in run.json()["data"]}
    assert set(hits) == {"french", "capitals", "reverse", "mystery"}
    assert hits["mystery"]["why"] == "weights"
    assert "mystery" in names(cli(home, "similar", "french", "--k", "3", "--json"))


@pytest.mark.parametrize("damage", ["missing", "flipped"])
def test_a_damaged_blob_costs_its_own_weight_vector_only(home, tmp_path, caplog, damage):
    """An adapter added after training whose blob then goes missing or bad: text, hybrid and
    weight search, `similar` and `reindex` keep working for the rest, the damage is logged by
    name, and the adapter is weight-searchable again once `loradex verify`'s repair is done."""
    assert cli(home, "encoder", "train").code == 0
    src = write_adapter_dir(tmp_path / "late", seed=12)
    digest = cli(home, "add", src, "--name", "late", "--description", "Count the vowels.", "--json")
    blob = home / "blobs" / "sha256" / digest.json()["digest"][:2] / digest.json()["digest"]
    good = blob.read_bytes()
    if damage == "missing":
        blob.unlink()
    else:
        blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    for args in (["search", "capital city"], ["search", "vowels", "--mode", "text"], ["reindex"]):
        run = cli(home, *args, "--json")
        assert run.code == 0, (args, run.stderr)
    assert "no weights vector for late" in caplog.text
    text = cli(home, "search", "count the vowels", "--mode", "text", "--k", "1", "--json")
    assert names(text) == ["late"]  # still found by its card
    weights = names(cli(home, "search", "capital", "--mode", "weights", "--k", "10", "--json"))
    assert set(weights) == {"french", "capitals", "reverse"}
    assert set(names(cli(home, "similar", "french", "--k", "10", "--json"))) == {
        "capitals",
        "reverse",
    }
    blob.write_bytes(good)  # repaired
    assert cli(home, "reindex").code == 0
    weights = names(cli(home, "search", "capital", "--mode", "weights", "--k", "10", "--json"))
    assert "late" in weights


def test_weight_search_with_no_readable_adapter_says_why_not_reindex(home, tmp_path):
    """Adapters are registered but none fits the encoder's layout: "register adapters or run
    reindex" would send the user in a circle."""
    assert cli(home, "encoder", "train").code == 0  # learned on q_proj/v_proj adapters
    src = write_adapter_dir(tmp_path / "oproj", seed=13, targets=("o_proj",))
    assert cli(home, "add", src, "--name", "shout", "--description", "Shout.").code == 0
    for name in ("french", "capitals", "reverse"):
        assert cli(home, "rm", name).code == 0
    assert cli(home, "reindex").code == 0
    run = cli(home, "search", "shout", "--mode", "weights")
    assert run.code == 2 and "[no_weight_vectors]" in run.stderr, run.stderr
    assert "no adapter in the catalog has a weight vector" in run.stderr
    assert "register adapters" not in run.stderr
    hybrid = cli(home, "search", "shout", "--k", "1", "--json")  # falls back to text
    assert names(hybrid) == ["shout"] and hybrid.json()["data"][0]["why"] == "text"


def test_reindex_and_encoder_train_fail_by_name_when_the_index_cannot_be_written(home):
    """Writing the indexes is these commands' whole job: a save that fails is their error
    (exit 1, coded), not a log line under exit 0."""
    assert cli(home, "search", "capital").code == 0
    index = home / "index"
    saved = {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()}
    (index / "text.faiss").unlink()
    (index / "text.faiss").mkdir()  # seen before anything is written
    for args in (["reindex"], ["encoder", "train"]):
        run = cli(home, *args)
        assert run.code == 1 and "[bad_index_dir]" in run.stderr, (args, run.stderr)
        assert "is a folder where an index file belongs" in run.stderr
    (index / "text.faiss").rmdir()
    sidecar = index / "text.faiss.json"
    sidecar.unlink()
    sidecar.mkdir()  # the save's final rename cannot replace a folder
    run = cli(home, "reindex", "--json")
    assert run.code == 1 and "[index_save_failed]" in run.stderr and "reindex" in run.stderr
    assert run.stdout == ""
    sidecar.rmdir()
    for p in index.iterdir():
        if p.is_file():
            p.unlink()
    index.rmdir()
    index.write_bytes(b"not a folder")
    for args in (["reindex"], ["encoder", "train"]):
        run = cli(home, *args)
        assert run.code == 1 and "[bad_index_dir]" in run.stderr, (args, run.stderr)
        assert "is a file where the search index folder belongs" in run.stderr
    assert index.read_bytes() == b"not a folder"  # nothing written over it
    index.unlink()
    assert cli(home, "reindex").code == 0
    assert set(saved) <= {p.name for p in index.iterdir()}
    assert names(cli(home, "search", "capital city", "--k", "1", "--json")) == ["capitals"]


def test_another_text_embedder_stales_the_index_and_the_encoder_until_rebuilt(tmp_path):
    from hub.services.search import SearchService

    container = service_home(tmp_path)
    container.search.train_encoder()
    assert container.search.search("capital", mode="weights", k=3)
    # a later process on the same data, whose text model is another one
    search = SearchService(container.registry, container.search.index_dir, "hash")
    search.cards.embedder.embedder_id = "hash-v1/384-a-different-model"
    with pytest.raises(HubError) as refused:  # the text index was built by the old model
        search.search("capital", mode="text")
    assert refused.value.code == "index_stale" and "loradex reindex" in refused.value.message
    report = search.sync(rebuild=True)
    assert report["text_count"] == 3 and "weights_count" not in report
    assert [r.item.name for r in search.search("capital city", mode="text", k=1)] == ["capitals"]
    # the encoder maps weights into the *old* text space: weight search refuses, hybrid is
    # text, `similar` (weight features, no text involved) keeps working
    with pytest.raises(ConflictError) as stale:
        search.search("capital", mode="weights")
    assert stale.value.code == "encoder_stale" and "loradex encoder train" in stale.value.message
    assert {r.why for r in search.search("capital", k=3)} == {"text"}
    assert len(search.similar(AdapterRef("french", None), k=2)) == 2
    search.train_encoder()  # retrained for the current text model
    assert {r.why for r in search.search("capital", mode="weights", k=3)} == {"weights"}


def test_encoder_train_under_another_text_model_refuses_before_replacing_the_encoder(tmp_path):
    from hub.services.search import SearchService

    container = service_home(tmp_path)
    container.search.train_encoder()
    saved = container.search.index_dir / "encoder" / "encoder.json"
    before = saved.read_bytes()
    search = SearchService(container.registry, container.search.index_dir, "hash")
    search.cards.embedder.embedder_id = "hash-v1/384-a-different-model"
    with pytest.raises(HubError) as refused:  # the text index needs `reindex` first
        search.train_encoder()
    assert refused.value.code == "index_stale" and "loradex reindex" in refused.value.message
    assert saved.read_bytes() == before  # the old encoder is still the one on disk
    search.sync(rebuild=True)
    assert search.train_encoder()["adapters"] == 3


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"LORADEX_SEARCH_INDEX_BACKEND": "hnsw"}, "hnsw"),
        ({"LORADEX_SEARCH_ANN_THRESHOLD": "2"}, "hnsw"),  # auto, past the threshold, no GPU
        ({"LORADEX_SEARCH_INDEX_BACKEND": "flat", "LORADEX_SEARCH_ANN_THRESHOLD": "2"}, "flat"),
        ({}, "flat"),
    ],
)
def test_index_backend_settings_apply_at_reindex(home, monkeypatch, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli(home, "reindex").code == 0
    meta = json.loads((home / "index" / "text.faiss.json").read_text())
    assert meta["backend"] == expected
    assert names(cli(home, "search", "capital city", "--k", "1", "--json")) == ["capitals"]


def test_bad_index_settings_are_refused_by_name(home, monkeypatch):
    monkeypatch.setenv("LORADEX_SEARCH_INDEX_BACKEND", "annoy")
    run = cli(home, "search", "capital")
    assert run.code == 2 and "search_index_backend" in run.stderr, run.stderr


def test_a_running_service_picks_up_an_encoder_trained_by_another_process(home):
    """A server's search sides are made once; `loradex encoder train` in another process (here:
    the CLI's own container) replaces the encoder files, and the server's next due catalog
    check reloads the encoder and its indexes, instead of answering encoder_missing until a
    restart. Removing the encoder is noticed the same way."""
    import shutil

    from tests.api_helpers import make_container

    server = make_container(home, text_embedder="hash").search
    server._watch.interval_s = 0.0  # every query re-checks (a server: every 0.25 s)
    assert [r.item.name for r in server.search("capital city", k=1, mode="text")] == ["capitals"]
    with pytest.raises(HubError) as missing:
        server.search("capital", mode="weights")
    assert missing.value.code == "encoder_missing"
    assert cli(home, "encoder", "train").code == 0  # another process
    hits = server.search("capital", k=3, mode="weights")
    assert len(hits) == 3 and {r.why for r in hits} == {"weights"}
    assert len(server.similar(AdapterRef("french"), k=2)) == 2
    assert server._encoder_stamp == server._encoder_files() is not None
    shutil.rmtree(home / "index" / "encoder")
    with pytest.raises(HubError) as gone:
        server.search("capital", mode="weights")
    assert gone.value.code == "encoder_missing"
    assert [r.item.name for r in server.search("capital city", k=1, mode="text")] == ["capitals"]


def test_similar_with_nothing_to_compare_says_so(home):
    assert cli(home, "encoder", "train").code == 0
    for name in ("capitals", "reverse"):
        assert cli(home, "rm", name).code == 0
    run = cli(home, "similar", "french")
    assert run.code == 0 and run.stdout == ""
    assert "no other adapter has weight features to compare with french" in run.stderr
    assert cli(home, "similar", "french", "--json").json() == {"data": [], "count": 0}


def test_an_adapter_ranked_above_a_module_width_is_embedded_and_search_keeps_working(
    home, tmp_path
):
    """A `cat` of many adapters has a rank above a module's width (v_proj here is 32 wide):
    its thin SVD must keep its factors consistent, or every search mode failed on it."""
    assert cli(home, "encoder", "train").code == 0
    wide = write_adapter_dir(tmp_path / "wide", seed=14, r=40)
    assert cli(home, "add", wide, "--name", "wide", "--description", "Very wide.").code == 0
    for mode in ("text", "weights", "hybrid"):
        run = cli(home, "search", "capital city", "--mode", mode, "--k", "10", "--json")
        assert "wide" in names(run), mode
    assert "wide" in names(cli(home, "similar", "french", "--k", "10", "--json"))
    assert cli(home, "reindex").code == 0


@pytest.mark.parametrize("second_name", ["zz", "zz2"])
def test_rm_then_add_under_a_reused_row_id_is_seen_by_a_server_and_by_reindex(
    home, tmp_path, second_name
):
    """SQLite gives the newest row's id to the next insert after a delete: `rm zz`, then `add`
    of the same weights (the same name, or another) reused the row id, the adapter id and the
    digest, so neither a running server nor a fresh search nor `reindex` noticed: the old card
    (or the deleted adapter) kept being returned."""
    from tests.api_helpers import make_container

    src = write_adapter_dir(tmp_path / "rw", seed=15)
    run = cli(home, "add", src, "--name", "zz", "--description", "Purple elephant telescope.")
    assert run.code == 0
    server = make_container(home, text_embedder="hash").search
    server._watch.interval_s = 0.0  # every query re-checks (a server: every 0.25 s)
    assert [r.item.name for r in server.search("purple elephant telescope", k=1, mode="text")] == [
        "zz"
    ]
    server.saver.flush(10)
    old_id = server.registry.catalog.version_id("zz", 1)
    assert cli(home, "rm", "zz").code == 0
    run = cli(home, "add", src, "--name", second_name, "--description", "Golden submarine.")
    assert run.code == 0
    assert server.registry.catalog.version_id(second_name, 1) == old_id  # the id was reused
    for searcher in (
        lambda q: server.search(q, k=1, mode="text"),
        lambda q: make_container(home, text_embedder="hash").search.search(q, k=1, mode="text"),
    ):
        hits = searcher("golden submarine")
        assert [(r.item.name, r.item.description) for r in hits] == [
            (second_name, "Golden submarine.")
        ]
        assert all(r.item.name != "zz" or second_name == "zz" for r in searcher("purple elephant"))
    assert cli(home, "reindex").code == 0
    assert names(
        cli(home, "search", "golden submarine", "--k", "1", "--mode", "text", "--json")
    ) == [second_name]
