"""`GET /search` and `GET /adapters/{name}/similar` over the API (the contract users script)."""

from __future__ import annotations

from tests.api_helpers import ERROR_KEYS, api_client, make_container, new_token, upload
from tests.factories import write_adapter_dir


def test_search_contract_and_errors(tmp_path):
    container = make_container(tmp_path / "home", text_embedder="hash")
    with api_client(container) as client:
        token = new_token(container)
        for i, (name, desc) in enumerate(
            [
                ("capitals", "Name the capital city of a country."),
                ("reverse", "Reverse the letters of a word."),
            ]
        ):
            src = write_adapter_dir(tmp_path / name, seed=i)
            assert upload(client, token, name, src, description=desc).status_code == 201
        r = client.get("/search", params={"q": "capital city of a country", "k": 1})
        assert r.status_code == 200
        body = r.json()
        assert body["count"] == 1
        hit = body["data"][0]
        assert {"name", "version", "score"} <= hit.keys() and hit["name"] == "capitals"
        for params in ({"q": "x", "k": 0}, {"q": "x" * 2001}, {"q": "x", "mode": "nope"}):
            bad = client.get("/search", params=params)
            assert 400 <= bad.status_code < 500 and set(bad.json()["error"]) == ERROR_KEYS
        missing = client.get("/adapters/capitals/similar")
        assert missing.status_code == 400 and "encoder" in missing.json()["error"]["message"]


def test_search_bad_input_empty_catalog_and_broken_index(tmp_path, caplog):
    container = make_container(tmp_path / "home", text_embedder="hash")
    with api_client(container) as client:
        empty = client.get("/search", params={"q": "anything"})
        assert empty.status_code == 200 and empty.json() == {"data": [], "count": 0}
        token = new_token(container)
        src = write_adapter_dir(tmp_path / "a", seed=1)
        assert upload(client, token, "capitals", src, description="Capital cities.").status_code
        cases = [
            ({"q": ""}, 400, "query_empty"),
            ({"q": "   "}, 400, "query_empty"),
            ({"q": "\u200b"}, 400, "query_empty"),
            ({"q": "\x00"}, 400, "query_empty"),
            ({"q": "x" * 10_000}, 422, None),
            ({"q": "x", "k": 10**6}, 422, None),
            ({"q": "x", "tag": "nope"}, 400, "unknown_tag"),
            ({"q": "x", "base_model": "nope"}, 400, "unknown_base_model"),
        ]
        bytes_not_text = client.get("/search?q=%ff%fe")  # decodes to U+FFFD twice
        assert bytes_not_text.status_code == 400, bytes_not_text.text
        assert bytes_not_text.json()["error"]["code"] == "query_empty"
        for params, status, code in cases:
            r = client.get("/search", params=params)
            assert r.status_code == status, (params, r.text)
            assert set(r.json()["error"]) == ERROR_KEYS
            assert code is None or r.json()["error"]["code"] == code
        assert client.get("/search", params={"q": "capital"}).json()["count"] == 1
        container.search.saver.flush(10)
    index = tmp_path / "home" / "index" / "text.faiss"
    index.write_bytes(index.read_bytes()[:-5] + b"junk!")
    restarted = make_container(tmp_path / "home", text_embedder="hash")  # loads from disk
    _warm_logs_one_line(restarted, caplog)
    with api_client(restarted) as client:
        broken = client.get("/search", params={"q": "capital"})
        assert broken.status_code == 409 and "loradex reindex" in broken.json()["error"]["message"]


def test_a_broken_encoder_is_409_and_text_search_still_answers(tmp_path):
    from tests.search_helpers import service_home

    container = service_home(tmp_path)
    container.search.train_encoder()
    encoder = container.search.index_dir / "encoder" / "encoder.safetensors"
    encoder.write_bytes(encoder.read_bytes()[:-9])  # truncated
    restarted = make_container(tmp_path / "svc", text_embedder="hash")
    with api_client(restarted) as client:
        weights = client.get("/search", params={"q": "capital", "mode": "weights"})
        assert weights.status_code == 409, weights.text
        assert weights.json()["error"]["code"] == "encoder_unavailable"
        assert "loradex encoder train" in weights.json()["error"]["message"]
        hybrid = client.get("/search", params={"q": "capital city of a country", "k": 1})
        assert hybrid.status_code == 200 and hybrid.json()["data"][0]["why"] == "text"
        bad = client.get("/adapters/bad..name/similar")  # the path's declared name pattern
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def _warm_logs_one_line(container, caplog) -> None:
    """`loradex serve` warming up over a stale index: one warning naming the code, not a
    traceback (the condition is known, and every query answers it by name)."""
    import gc

    from api.app import warm_then_freeze

    with caplog.at_level("WARNING", logger="api.app"):
        try:
            warm_then_freeze(container)
        finally:
            gc.unfreeze()
    records = [r for r in caplog.records if r.name == "api.app"]
    assert len(records) == 1 and records[0].exc_info is None
    assert "[index_stale]" in records[0].getMessage()
