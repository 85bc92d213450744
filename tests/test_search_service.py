"""`loradex search / similar / reindex / encoder train`: results, filters, freshness, refusals."""

from __future__ import annotations

import pytest

from tests.cli_helpers import ZOO, cli
from tests.factories import write_adapter_dir

CARDS = {
    "french": "Translate a colour name into French.",
    "capitals": "Name the capital city of a country.",
    "reverse": "Reverse the letters of a word.",
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "hash")
    h = tmp_path / "home"
    for i, (name, desc) in enumerate(CARDS.items()):
        src = write_adapter_dir(tmp_path / name, seed=i)
        tags = ["lookup"] if name != "reverse" else ["letters"]
        assert (
            cli(
                h,
                "add",
                src,
                "--name",
                name,
                "--description",
                desc,
                *sum((["--tag", t] for t in tags), []),
            ).code
            == 0
        )
    return h


def names(run):
    assert run.code == 0, run.stderr
    return [d["name"] for d in run.json()["data"]]


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
