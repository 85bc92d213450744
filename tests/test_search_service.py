"""`loradex search / similar / reindex / encoder train`: results, filters, freshness, refusals."""

from __future__ import annotations

import threading
import time

import pytest

from tests.cli_helpers import ZOO, cli
from tests.factories import write_adapter_dir
from tests.search_helpers import names, search_home, service_home, top_names


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "hash")
    return search_home(tmp_path)


def test_text_search_finds_and_filters(home):
    run = cli(home, "search", "capital city of a country", "--mode", "text", "--k", "2", "--json")
    assert names(run)[0] == "capitals"
    hit = run.json()["data"][0]
    assert {
        "name",
        "version",
        "base_model",
        "description",
        "tags",
        "source",
        "score",
        "why",
    } <= hit.keys()
    assert hit["why"] == "text" and hit["score"] > run.json()["data"][1]["score"]
    only_letters = cli(home, "search", "capital city", "--tag", "letters", "--json")
    assert names(only_letters) == ["reverse"]


def test_new_and_removed_adapters_show_up_at_once(home, tmp_path):
    assert "capitals" in names(cli(home, "search", "capital", "--json"))
    src = write_adapter_dir(tmp_path / "new", seed=9)
    cli(home, "add", src, "--name", "planets", "--description", "Name the planets in order.")
    assert names(cli(home, "search", "planets in order", "--k", "1", "--json")) == ["planets"]
    cli(home, "rm", "capitals")
    assert "capitals" not in names(cli(home, "search", "capital city", "--json"))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["", "--json"], "empty"),
        (["x" * 10_000], "2000"),
        (["capital", "--k", "0"], "k"),
        (["capital", "--k", "100000"], "k"),
        (["capital", "--mode", "telepathy"], "known"),
        (["capital", "--mode", "weights"], "encoder train"),
    ],
)
def test_bad_queries_exit_2(home, args, fragment):
    run = cli(home, "search", *args)
    assert run.code == 2 and fragment in run.stderr, run.stderr


def test_empty_catalog_and_similar_without_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "hash")
    run = cli(tmp_path / "h", "search", "anything")  # an empty catalog: empty result, exit 0
    assert run.code == 0 and run.stdout == "" and "catalog is empty" in run.stderr
    assert cli(tmp_path / "h", "search", "anything", "--json").json() == {"data": [], "count": 0}
    cli(tmp_path / "h", "add", write_adapter_dir(tmp_path / "a", seed=1), "--name", "a")
    run = cli(tmp_path / "h", "similar", "a")
    assert run.code == 2 and "encoder train" in run.stderr


def test_corrupted_index_says_reindex_and_reindex_heals(home):
    assert cli(home, "search", "capital").code == 0
    index = home / "index" / "text.faiss"
    index.write_bytes(index.read_bytes()[:-7] + b"garbage")
    run = cli(home, "search", "capital")
    assert run.code == 1 and "loradex reindex" in run.stderr  # derived data failed, not input
    assert cli(home, "reindex", "--json").json()["text_count"] == 3
    assert names(cli(home, "search", "capital city", "--k", "1", "--json")) == ["capitals"]


def test_index_from_another_embedder_is_refused(home, monkeypatch):
    assert cli(home, "search", "capital").code == 0
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "minilm")
    run = cli(home, "search", "capital")
    assert run.code == 1 and "reindex" in run.stderr


@pytest.mark.slow
@pytest.mark.skipif(not ZOO.is_dir(), reason="no shared/zoo")
def test_zoo_search_weights_and_similar_with_real_models(tmp_path):
    home = tmp_path / "zoo-home"
    assert cli(home, "import-zoo", ZOO).code == 0
    top = names(cli(home, "search", "turn a colour into its French word", "--k", "3", "--json"))
    assert top[0] == "french_color"
    trained = cli(home, "encoder", "train", "--json")
    assert trained.code == 0, trained.stderr
    assert trained.json()["weights_count"] == 49
    run = cli(home, "search", "reverse the letters of the word", "--mode", "weights", "--json")
    assert run.json()["data"][0]["why"] == "weights"
    similar = names(cli(home, "similar", "capital_of", "--k", "3", "--json"))
    assert "capital_of" not in similar and len(similar) == 3


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--tag", "nope"], "no adapter has tag 'nope'; known: letters, lookup"),
        (["--base", "gpt-9"], "no adapter has base model 'gpt-9'; known:"),
        (["--source", "hf://x"], "no adapter has source 'hf://x'; known: upload"),
    ],
)
def test_unknown_filter_values_exit_2_listing_known(home, args, fragment):
    run = cli(home, "search", "capital", *args)
    assert run.code == 2 and fragment in run.stderr, run.stderr


# -- the service in-process: freshness, card reuse, reindex without blocking --------------------


def test_known_filters_without_match_give_an_empty_result(tmp_path):
    from hub.core.models import AdapterMeta
    from tests.factories import peft_config

    container = service_home(tmp_path)
    src = write_adapter_dir(tmp_path / "other", seed=7, config=peft_config(base="other-base"))
    container.registry.add_path(src, AdapterMeta(name="solo", tags=["solo"]))
    service = container.search
    assert top_names(service, "capital", base_model="other-base", tag="t") == []
    assert top_names(service, "capital", base_model="other-base") == ["solo"]


def test_new_version_reuses_or_reembeds_card_and_mirrors_text_hash(tmp_path):
    from hub.core.models import AdapterMeta

    container = service_home(tmp_path)
    service = container.search
    assert service.sync()["text_added"] == 3
    service.saver.flush(10)
    catalog = container.catalog
    hashes = {v.name: v.text_hash for v in catalog.latest_versions()}
    assert all(h and len(h) == 64 for h in hashes.values())  # mirrored after the save
    # a new version with the same card: the vector is reused, nothing is embedded
    src = write_adapter_dir(tmp_path / "v2", seed=20)
    container.registry.add_path(src, AdapterMeta(name="french"))  # keeps the description
    report = service.sync()
    assert (report["text_added"], report["text_reused"], report["text_removed"]) == (0, 1, 1)
    # a new version with a new description: embedded, found by the new words
    src = write_adapter_dir(tmp_path / "v3", seed=21)
    container.registry.add_path(src, AdapterMeta(name="french", description="Say it in French."))
    assert service.sync()["text_added"] == 1
    hits = service.search("say it in french", mode="text", k=1)
    assert hits[0].item.name == "french" and hits[0].item.version == 3
    service.saver.flush(10)
    latest = {v.name: v for v in catalog.latest_versions()}
    assert latest["french"].text_hash not in (None, hashes["french"])


def test_an_added_adapter_is_found_within_a_second(tmp_path):
    from hub.core.models import AdapterMeta

    container = service_home(tmp_path)
    service = container.search
    service.search("warm", mode="text")  # index loaded, embedder ready
    src = write_adapter_dir(tmp_path / "new", seed=30)
    t0 = time.perf_counter()
    container.registry.add_path(src, AdapterMeta(name="planets", description="Name the planets."))
    assert top_names(service, "name the planets", k=1) == ["planets"]
    assert time.perf_counter() - t0 < 1.0
    service.saver.flush(10)


def test_queries_keep_answering_during_reindex(tmp_path, monkeypatch):
    """reindex builds new indexes off to the side (slowed down here to 1.5 s) and swaps; the
    queries issued meanwhile are answered by the old ones, promptly and correctly."""
    import hub.services.search_sync as search_mod

    container = service_home(tmp_path)
    service = container.search
    assert top_names(service, "capital city of a country", k=1) == ["capitals"]
    real_seed = search_mod._seed_from
    started = threading.Event()

    def slow_seed(side, old):
        started.set()
        time.sleep(1.5)
        real_seed(side, old)

    monkeypatch.setattr(search_mod, "_seed_from", slow_seed)
    worker = threading.Thread(target=service.sync, kwargs={"rebuild": True})
    worker.start()
    assert started.wait(10)
    latencies = []
    while worker.is_alive():
        t0 = time.perf_counter()
        assert top_names(service, "capital city of a country", k=1) == ["capitals"]
        latencies.append(time.perf_counter() - t0)
    worker.join()
    assert len(latencies) >= 3 and max(latencies) < 0.5, latencies
    assert top_names(service, "reverse the letters", k=1) == ["reverse"]  # the new indexes
