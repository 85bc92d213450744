"""REST /adapters on SQLite and PostgreSQL: upload, list, show, download, delete; auth on every
write route; size limit, pickles and malformed safetensors refused with nothing stored."""

from __future__ import annotations

import hashlib
import json
import pickle
import uuid
from typing import Annotated

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient

from api.deps import StrictQuery
from hub.services.tokens import TokenService
from tests.api_helpers import (
    api_client,
    assert_error,
    auth,
    make_container,
    new_token,
    seed_adapters,
    stored_state,
    upload,
    upload_files,
)
from tests.factories import peft_config, write_adapter_dir


@pytest.fixture
def client(container):
    with api_client(container) as cl:
        yield cl


def test_upload_list_show_download_delete(client, token, tmp_path):
    src = write_adapter_dir(tmp_path / "a", seed=1)
    r = upload(client, token, "alpha", src, description="does alpha", tags="x, y", license="mit")
    assert r.status_code == 201, r.text
    item = r.json()
    assert (item["name"], item["version"], item["created"]) == ("alpha", 1, True)
    assert item["tags"] == ["x", "y"] and item["license"] == "mit" and item["rank"] == 4

    again = upload(client, token, "alpha", src)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["version"] == 1

    listing = client.get("/adapters").json()
    assert (listing["count"], listing["total"]) == (1, 1)
    detail = client.get("/adapters/alpha").json()
    weights = (src / "adapter_model.safetensors").read_bytes()
    assert detail["digest"] == hashlib.sha256(weights).hexdigest()
    assert client.get("/adapters/alpha/versions/1").json() == detail

    got = client.get("/adapters/alpha/files/adapter_model.safetensors")
    assert got.status_code == 200 and got.content == weights
    cfg = client.get("/adapters/alpha/versions/1/files/adapter_config.json").json()
    assert cfg["r"] == 4 and cfg["peft_type"] == "LORA"

    v2 = upload(client, token, "alpha", write_adapter_dir(tmp_path / "b", seed=2)).json()
    assert v2["version"] == 2
    assert client.delete("/adapters/alpha/versions/1", headers=auth(token)).status_code == 204
    assert_error(client.get("/adapters/alpha/versions/1"), 404, "not_found")
    assert client.delete("/adapters/alpha", headers=auth(token)).status_code == 204
    assert_error(client.get("/adapters/alpha"), 404, "not_found")
    assert client.get("/adapters").json()["total"] == 0


def test_list_filters_and_paging(client, token, tmp_path):
    seed_adapters(client, token, tmp_path, ["a", "b", "c"])
    upload(client, token, "d", write_adapter_dir(tmp_path / "d", seed=9), tags="special")
    page = client.get("/adapters", params={"limit": 2, "offset": 1}).json()
    assert [i["name"] for i in page["data"]] == ["b", "c"]
    assert (page["count"], page["total"]) == (2, 4)
    tagged = client.get("/adapters", params={"tag": "special"}).json()
    assert [i["name"] for i in tagged["data"]] == ["d"]
    assert client.get("/adapters", params={"source": "merge"}).json()["total"] == 0
    assert_error(client.get("/adapters", params={"limit": 0}), 422, "invalid_request")
    # A filter typo must not answer with the unfiltered list: unknown parameters are named.
    error = assert_error(client.get("/adapters", params={"tags": "special"}), 422)
    assert error["details"]["errors"][0]["loc"] == ["query", "tags"]
    takes = "this route takes: all_versions, base_model, limit, offset, source, tag"
    assert takes in error["message"]
    for path in ("/health", "/methods", "/adapters/a", "/jobs"):
        assert_error(client.get(path, params={"verbose": "1"}), 422, "invalid_request")
    assert client.head("/adapters", params={"tags": "x"}).status_code == 422  # HEAD: no body
    assert_error(client.get("/search", params={"q": "x", "kk": 3}), 422, "invalid_request")
    # A single-valued parameter given twice: FastAPI kept the last value, so `tag=a&tag=b`
    # answered with the `b` list alone.
    twice = assert_error(client.get("/adapters?tag=special&tag=other"), 422, "invalid_request")
    assert twice["details"]["errors"][0]["loc"] == ["query", "tag"]
    assert "given more than once" in twice["message"]
    assert_error(client.get("/search?q=x&q=y"), 422, "invalid_request")
    assert_error(client.get("/adapters?limit=1&limit=2"), 422, "invalid_request")


def test_the_query_check_lets_list_parameters_repeat():
    """A list-typed query parameter takes many values; only single-valued ones given twice are
    refused (no loradex route takes a list yet: this guards the rule for the first one)."""
    app = FastAPI()

    @app.get("/t", dependencies=[StrictQuery])
    def t(tag: Annotated[list[str] | None, Query()] = None, k: int = 1) -> dict[str, object]:
        return {"tag": tag, "k": k}

    client = TestClient(app)
    assert client.get("/t?tag=a&tag=b&k=2").json() == {"tag": ["a", "b"], "k": 2}
    refused = client.get("/t?tag=a&k=2&k=3")
    assert refused.status_code == 422
    assert [e["loc"] for e in refused.json()["detail"]] == [["query", "k"]]


def _write_routes(job_id: str):
    return [
        ("POST", "/adapters", {"data": {"name": "new"}}),
        ("DELETE", "/adapters/keep", {}),
        ("DELETE", "/adapters/keep/versions/1", {}),
        ("POST", "/merges", {"json": {"adapters": ["keep"], "method": "linear", "name": "m"}}),
        ("POST", f"/jobs/{job_id}/cancel", {}),
    ]


def test_every_write_route_refuses_missing_wrong_and_revoked_tokens(
    client, container, token, tmp_path
):
    seed_adapters(client, token, tmp_path, ["keep"])
    tokens = TokenService(container.catalog)
    revoked = tokens.create("old")
    tokens.revoke(revoked.id)
    job_id = container.catalog.create_job("merge", {}).id
    bad_headers = {
        "missing": {},
        "wrong": auth("ldx_" + "x" * 43),
        "revoked": auth(revoked.token),
        "not bearer": {"Authorization": f"Basic {token}"},
        "empty bearer": {"Authorization": "Bearer "},
    }
    before = stored_state(client, container.settings.home)
    files = upload_files(write_adapter_dir(tmp_path / "new", seed=5))
    for method, path, kwargs in _write_routes(job_id):
        for label, headers in bad_headers.items():
            extra = {"files": files} if path == "/adapters" else {}
            r = client.request(method, path, headers=headers, **kwargs, **extra)
            err = assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer", (method, path, label)
            assert err["message"]
    assert stored_state(client, container.settings.home) == before
    assert container.catalog.get_job(job_id).state == "queued"


def test_reads_can_be_closed_by_setting(tmp_path, catalog_url):
    c = make_container(tmp_path / "home", catalog_url, api_read_requires_token=True)
    token = new_token(c)
    with api_client(c) as client:
        assert client.get("/health").status_code == 200  # probes stay open
        assert_error(client.get("/adapters"), 401, "unauthorized")
        assert_error(client.get("/jobs"), 401, "unauthorized")
        assert_error(client.get("/methods", headers=auth("nope")), 401, "unauthorized")
        assert client.get("/adapters", headers=auth(token)).status_code == 200
    c.catalog.close()


def test_upload_over_the_limit_is_refused_and_stores_nothing(tmp_path, catalog_url):
    c = make_container(tmp_path / "home", catalog_url, upload_max_bytes=4096)
    token = new_token(c)
    src = write_adapter_dir(tmp_path / "big", seed=1)  # ~12 KiB of weights
    with api_client(c) as client:
        before = stored_state(client, c.settings.home)
        assert_error(upload(client, token, "big", src), 413, "payload_too_large")

        # No Content-Length (chunked): the limit is enforced on the stream itself.
        def chunks():
            yield b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
            for _ in range(10):
                yield b"0" * 1024

        r = client.post(
            "/adapters",
            content=chunks(),
            headers={**auth(token), "Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert_error(r, 413, "payload_too_large")
        assert stored_state(client, c.settings.home) == before
        assert client.get("/adapters/big").status_code == 404
    c.catalog.close()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    ("weights", "code"),
    [
        (pickle.dumps({"w": _Evil()}, protocol=4), "pickle_refused"),
        (b"PK\x03\x04" + b"\x00" * 64, "safetensors_not_safetensors"),
        ((10**6).to_bytes(8, "little") + b"{}", "safetensors_header_too_large"),
        ((7).to_bytes(8, "little") + b'{"a":1}', "safetensors_bad_entry"),
        (b"\x01\x02", "safetensors_truncated"),
    ],
    ids=["pickle", "torch-zip", "header-too-large", "bad-entry", "truncated"],
)
def test_pickles_and_malformed_safetensors_are_refused(client, container, token, weights, code):
    before = stored_state(client, container.settings.home)
    files = {
        "adapter_config.json": ("adapter_config.json", json.dumps(peft_config()).encode()),
        "adapter_model.safetensors": ("adapter_model.safetensors", weights),
    }
    r = client.post("/adapters", headers=auth(token), data={"name": "bad"}, files=files)
    assert_error(r, 400, code)
    assert stored_state(client, container.settings.home) == before


def test_a_base_model_id_longer_than_the_filters_take_is_refused(
    client, container, token, tmp_path
):
    """Every stored base model id fits GET /adapters?base_model= and /search's filter."""
    src = write_adapter_dir(tmp_path / "a", seed=1)
    before = stored_state(client, container.settings.home)
    long_id = "org/" + "m" * 253  # 257 characters
    error = assert_error(upload(client, token, "x", src, base_model=long_id), 400)
    assert error["code"] == "base_model_invalid" and "1-256 characters" in error["message"]
    assert stored_state(client, container.settings.home) == before
    ok_id = "org/" + "m" * 252  # 256: stored, and found by both filters
    assert upload(client, token, "x", src, base_model=ok_id).status_code == 201
    assert [
        a["name"] for a in client.get("/adapters", params={"base_model": ok_id}).json()["data"]
    ] == ["x"]
    r = client.get("/search", params={"q": "anything", "mode": "text", "base_model": ok_id})
    assert r.status_code == 200 and [a["name"] for a in r.json()["data"]] == ["x"]
    for key, size in (("base_model", 257), ("tag", 65), ("source", 257)):
        r = client.get("/search", params={"q": "anything", key: "t" * size})
        assert_error(r, 422, "invalid_request")


def test_bad_form_inputs_get_specific_codes(client, container, token, tmp_path):
    src = write_adapter_dir(tmp_path / "a", seed=1)
    files = upload_files(src)
    r = client.post(
        "/adapters",
        headers=auth(token),
        data={"name": "x"},
        files={"adapter_config.json": files["adapter_config.json"]},
    )
    assert_error(r, 400, "weights_missing")
    r = client.post(
        "/adapters",
        headers=auth(token),
        data={"name": "x"},
        files={**files, "adapter_config.json": ("adapter_config.json", b"{not json")},
    )
    assert_error(r, 400, "config_invalid")
    assert_error(upload(client, token, "../evil", src), 400, "invalid_name")
    assert_error(client.post("/adapters", headers=auth(token), json={}), 400, "invalid_request")
    assert stored_state(client, container.settings.home) == ([], [])


def test_unknown_or_repeated_form_fields_are_refused_by_name(client, container, token, tmp_path):
    src = write_adapter_dir(tmp_path / "a", seed=1)
    r = upload(client, token, "x", src, descripton="A typo must not drop the description.")
    assert "'descripton'" in assert_error(r, 400, "invalid_request")["message"]
    r = client.post(
        "/adapters",
        headers=auth(token),
        data={"name": ["x", "y"]},
        files=upload_files(src),
    )
    assert "'name' is sent more than once" in assert_error(r, 400, "invalid_request")["message"]
    assert stored_state(client, container.settings.home) == ([], [])
    r = client.post(
        "/adapters",
        headers=auth(token),
        data={"name": "x", "tags": ["a", "b,c"]},  # tags may repeat
        files=upload_files(src),
    )
    assert r.status_code == 201 and r.json()["tags"] == ["a", "b", "c"]


def test_a_sha256_sent_with_the_upload_is_checked_on_arrival(client, container, token, tmp_path):
    src = write_adapter_dir(tmp_path / "a", seed=1)
    weights = (src / "adapter_model.safetensors").read_bytes()
    right = hashlib.sha256(weights).hexdigest()
    damaged = hashlib.sha256(weights[:-1]).hexdigest()  # as if the client hashed a short copy
    r = upload(client, token, "x", src, sha256=damaged)
    error = assert_error(r, 400, "digest_mismatch")
    assert right in error["message"] and damaged in error["message"]
    for bad in ("abc", "g" * 64, right + "0"):
        assert_error(upload(client, token, "x", src, sha256=bad), 400, "invalid_request")
    assert stored_state(client, container.settings.home) == ([], [])
    r = upload(client, token, "x", src, sha256=right.upper())  # either case, as tools print it
    assert r.status_code == 201 and r.json()["digest"] == right


def test_head_answers_like_get_without_a_body(client, container, token):
    """curl -I, link checkers and health probes send HEAD: it mirrors GET's status and
    headers, sends no body, and writes nothing."""
    for path in ("/health", "/adapters", "/methods", "/", "/adapters/nope"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers["content-length"] == str(len(got.content)), path
    assert client.head("/adapters/nope").status_code == 404
    # No GET route on the path: still the router's own answer, in the error shape.
    assert client.head("/merges").status_code == 405
    assert client.head("/nowhere").status_code == 404


def test_framework_errors_use_the_error_shape(client):
    assert_error(client.get("/nope"), 404, "not_found")
    r = client.put("/adapters")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD, POST"  # both routes of the path (RFC 9110)
    r = client.put("/adapters/sentiment")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert client.post("/health").headers["allow"] == "GET, HEAD"
    assert_error(client.get(f"/jobs/{uuid.uuid4()}"), 404, "not_found")
    assert_error(client.get("/jobs/not-a-uuid"), 422, "invalid_request")
    assert_error(client.get("/adapters/bad%20name"), 422, "invalid_request")
    assert_error(client.get("/adapters/x/files/model.bin"), 422, "invalid_request")
