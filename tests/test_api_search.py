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
