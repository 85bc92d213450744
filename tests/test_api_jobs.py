"""REST merges and jobs on SQLite and PostgreSQL: submit -> poll -> succeeded with lineage,
up-front validation, cancel, the server-sent events stream, and restart recovery."""

from __future__ import annotations

import json

import pytest

from hub.services.jobs import RESTART_REASON
from tests.api_helpers import (
    api_client,
    assert_error,
    auth,
    poll_job,
    seed_adapters,
    upload,
)
from tests.factories import write_adapter_dir


def torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


MERGE = {"adapters": ["a", "b@1"], "method": "linear", "weights": [0.7, 0.3], "name": "ab"}


@pytest.fixture
def client(container, token, tmp_path):
    with api_client(container) as cl:
        seed_adapters(cl, token, tmp_path, ["a", "b"])
        yield cl


def test_merge_job_end_to_end_has_lineage(client, token):
    r = client.post("/merges", headers=auth(token), json={**MERGE, "tags": ["merged"]})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/jobs/{job_id}"
    job = poll_job(client, job_id)
    assert job["state"] == "succeeded", job
    assert (job["progress"], job["result"], job["error"]) == (1.0, "ab@1", None)
    assert job["spec"]["adapters"] == ["a@1", "b@1"]  # pinned at submit time

    detail = client.get("/adapters/ab").json()
    assert detail["source"] == "merge" and detail["tags"] == ["merged"]
    parents = [(p["name"], p["version"], p["weight"]) for p in detail["lineage"]["parents"]]
    assert parents == [("a", 1, 0.7), ("b", 1, 0.3)]
    assert detail["lineage"]["recipe"]["method"] == "linear"
    listed = client.get("/jobs", params={"state": "succeeded"}).json()
    assert [j["id"] for j in listed["data"]] == [job_id]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"method": "nope"}, 400, "unknown_method"),
        ({"adapters": ["a", "missing"]}, 404, "not_found"),
        ({"adapters": ["a", "b@7"]}, 404, "not_found"),
        ({"weights": [1.0]}, 400, "weights_count_mismatch"),
        ({"params": {"density": "lots"}, "method": "ties"}, 400, "invalid_params"),
        ({"name": "../x"}, 422, "invalid_request"),
        ({"adapters": ["a", "b@99999999999"]}, 422, "invalid_request"),
        ({"adapters": []}, 422, "invalid_request"),
        ({"unknown": 1}, 422, "invalid_request"),
        ({"device": "tpu"}, 422, "invalid_request"),
        # shape and rank rules are decided from the catalog at submit time, not in the worker
        ({"method": "svd", "params": {"rank": 99}}, 400, "target_rank_too_large"),
        ({"method": "rmm", "params": {"basis": 5}}, 400, "basis_too_large"),
        ({"method": "rmm", "params": {"basis": True}}, 400, "invalid_params"),
        # a JSON value of the wrong type is named, not coerced (true was weight 1.0, "7" seed 7)
        ({"weights": [True, 1.0]}, 422, "invalid_request"),
        ({"weights": ["0.5", 1.0]}, 422, "invalid_request"),
        ({"seed": "7"}, 422, "invalid_request"),
        ({"seed": True}, 422, "invalid_request"),
        ({"seed": 7.5}, 422, "invalid_request"),
    ],
)
def test_merge_requests_are_validated_up_front(client, token, change, status, code):
    r = client.post("/merges", headers=auth(token), json={**MERGE, **change})
    assert_error(r, status, code)
    assert client.get("/jobs").json()["count"] == 0


@pytest.mark.parametrize(
    ("fragment", "field"),
    [
        ('"method": "svd", "params": {"rank": NaN}', "body.params: Value error, rank is nan"),
        ('"method": "svd", "params": {"clamp": 1e999}', "body.params: Value error, clamp is inf"),
        ('"method": "svd", "params": {"x": [1, -Infinity]}', "x[1] is -inf"),
    ],
)
def test_non_finite_numbers_are_refused_not_stored_as_null(client, token, fragment, field):
    """Python's JSON reader takes NaN / Infinity tokens and overflows 1e999 to inf; stored as
    null they would let the job run with a default instead of the value sent."""
    body = f'{{"adapters": ["a", "b"], "name": "nan-merge", {fragment}}}'
    r = client.post(
        "/merges",
        headers={**auth(token), "content-type": "application/json"},
        content=body,
    )
    error = assert_error(r, 422, "invalid_request")
    assert field in error["message"]
    assert client.get("/jobs").json()["count"] == 0


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"adapters": ["a", "b"], "params": {"rank": 2, "rank": 3}, "name": "x"}', "rank"),
        ('{"adapters": ["a", "b"], "name": "x", "name": "y"}', "name"),
    ],
)
def test_a_key_twice_in_a_json_object_is_refused(client, token, body, key):
    """Python's JSON reader keeps the last of two equal keys: which one was meant is unknown."""
    for media in ("application/json", "application/json; charset=utf-8"):
        headers = {**auth(token), "content-type": media}
        error = assert_error(client.post("/merges", headers=headers, content=body), 422)
        assert (
            error["code"] == "invalid_request"
            and f"key {key!r} appears twice" in (error["message"])
        )
    assert client.get("/jobs").json()["count"] == 0
    # the same body without the repeat is taken, read through the replayed stream
    once = body.replace(', "rank": 3', "").replace(', "name": "y"', "")
    r = client.post("/merges", headers={**auth(token), "content-type": "application/json"},
                    content=once)  # fmt: skip
    assert r.status_code == 202, r.text


def test_json_the_duplicate_check_cannot_read_goes_to_the_route_as_before(client, token):
    headers = {**auth(token), "content-type": "application/json"}
    deep = b"[" * 100_000 + b"]" * 100_000  # the parser's recursion limit, not a crash
    for body in (deep, b"\xff{"):  # too deep for the parser; not UTF-8
        assert_error(client.post("/merges", headers=headers, content=body), 400, "bad_request")
    assert client.get("/jobs").json()["count"] == 0


def test_a_non_finite_weight_gets_the_engines_code(client, token):
    body = '{"adapters": ["a", "b"], "name": "nan-merge", "weights": [1, NaN]}'
    headers = {**auth(token), "content-type": "application/json"}
    assert_error(client.post("/merges", headers=headers, content=body), 400, "weights_not_finite")
    assert client.get("/jobs").json()["count"] == 0


def test_module_sets_are_checked_at_submit_time(container, token, tmp_path):
    with api_client(container) as client:
        seed_adapters(client, token, tmp_path, ["a"])
        q_only = write_adapter_dir(tmp_path / "q", seed=5, targets=("q_proj",))
        assert upload(client, token, "q-only", q_only).status_code == 201
        pair = {"adapters": ["a", "q-only"], "method": "cat", "name": "aq"}
        r = client.post("/merges", headers=auth(token), json=pair)
        error = assert_error(r, 400, "module_set_mismatch")
        assert "a@1" not in error["message"] and "q-only@1" in error["message"]
        assert client.get("/jobs").json()["count"] == 0
        loose = {**pair, "params": {"modules": "intersection"}}
        assert client.post("/merges", headers=auth(token), json=loose).status_code == 202


@pytest.mark.skipif(torch_cuda(), reason="needs a machine without CUDA")
def test_a_failed_job_carries_its_error_code(client, token):
    r = client.post("/merges", headers=auth(token), json={**MERGE, "device": "cuda:0"})
    assert r.status_code == 202, r.text  # cuda:N is valid: the worker decides
    job = poll_job(client, r.json()["job_id"])
    assert job["state"] == "failed" and job["error_code"] == "device_unavailable", job
    assert job["error"].startswith("device_unavailable: ")


def test_cancel_a_queued_job(container, token, tmp_path):
    with api_client(container, run_jobs=False) as client:  # nothing picks jobs up
        seed_adapters(client, token, tmp_path, ["a", "b"])
        job_id = client.post("/merges", headers=auth(token), json=MERGE).json()["job_id"]
        assert client.get(f"/jobs/{job_id}").json()["state"] == "queued"
        r = client.post(f"/jobs/{job_id}/cancel", headers=auth(token))
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert_error(
            client.post(f"/jobs/{job_id}/cancel", headers=auth(token)), 409, "job_finished"
        )


def test_events_stream_ends_with_the_terminal_state(client, token):
    job_id = client.post("/merges", headers=auth(token), json=MERGE).json()["job_id"]
    events = []
    with client.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    assert events and events[-1]["state"] == "succeeded" and events[-1]["result"] == "ab@1"
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    assert all(e["id"] == job_id for e in events)


def test_restart_fails_running_jobs_and_resumes_queued_ones(container, token, tmp_path):
    with api_client(container, run_jobs=False) as client:
        seed_adapters(client, token, tmp_path, ["a", "b"])
        crashed = client.post("/merges", headers=auth(token), json=MERGE).json()["job_id"]
        queued = client.post(
            "/merges", headers=auth(token), json={**MERGE, "name": "resumed"}
        ).json()["job_id"]
    container.catalog.update_job(crashed, state="running", progress=0.3)  # as if killed mid-way

    with api_client(container) as client:  # start-up runs the recovery
        failed = client.get(f"/jobs/{crashed}").json()
        assert failed["state"] == "failed" and failed["error"] == RESTART_REASON
        done = poll_job(client, queued)
        assert done["state"] == "succeeded" and done["result"] == "resumed@1"
        assert_error(client.get("/adapters/ab"), 404)  # the crashed merge published nothing


def test_a_queued_job_never_runs_on_an_input_replaced_while_it_waited(container, token, tmp_path):
    """Inputs are pinned to NAME@VERSION and its digest at submit time. Deleted and registered
    again under its name, "a" restarts at a@1 with other weights: the job must not merge those."""
    with api_client(container, run_jobs=False) as client:  # jobs wait in the queue
        seed_adapters(client, token, tmp_path, ["a", "b", "c"])
        replaced = client.post("/merges", headers=auth(token), json=MERGE).json()["job_id"]
        bc = {**MERGE, "adapters": ["b", "c"], "name": "bc"}
        deleted = client.post("/merges", headers=auth(token), json=bc).json()["job_id"]
        spec = client.get(f"/jobs/{replaced}").json()["spec"]
        assert set(spec["pinned_digests"]) == {"a@1", "b@1"}
        for name in ("a", "c"):
            assert client.delete(f"/adapters/{name}", headers=auth(token)).status_code == 204
        newcomer = write_adapter_dir(tmp_path / "newcomer", seed=99)
        assert upload(client, token, "a", newcomer).json()["version"] == 1

    with api_client(container) as client:  # a worker picks them up
        job = poll_job(client, replaced)
        assert job["state"] == "failed" and job["error"].startswith("input_changed: a@1 is not")
        job = poll_job(client, deleted)
        assert job["state"] == "failed" and job["error"].startswith("input_deleted: c@1 was")
        assert_error(client.get("/adapters/ab"), 404)
        assert_error(client.get("/adapters/bc"), 404)


def _merged(client, token, body) -> dict:
    return poll_job(client, client.post("/merges", headers=auth(token), json=body).json()["job_id"])


def test_revert_a_member_of_an_rmm_merge_over_rest(client, token):
    job = _merged(client, token, {"adapters": ["a", "b"], "method": "rmm", "name": "ab-rmm"})
    assert job["state"] == "succeeded", job
    route = "/adapters/ab-rmm/revert"
    assert client.post(route, json={"member": "b"}).status_code == 401  # a write: token needed
    r = client.post(route, headers=auth(token), json={"member": "b", "name": "b-back"})
    assert r.status_code == 201, r.text
    item = r.json()
    assert (item["name"], item["source"], item["created"]) == ("b-back", "reverted", True)
    parents = client.get("/adapters/b-back").json()["lineage"]["parents"]
    assert [(p["name"], p["relation"]) for p in parents] == [("ab-rmm", "revert")]
    again = client.post(route, headers=auth(token), json={"member": "b", "name": "b-back"})
    assert again.status_code == 200, again.text  # idempotent, as an upload is
    assert (again.json()["version"], again.json()["created"]) == (item["version"], False)
    assert _merged(client, token, MERGE)["state"] == "succeeded"  # "ab": a linear merge
    before = client.get("/adapters").json()["total"]
    for path, body, status, code in [
        (route, {"member": "zz"}, 400, "rmm_not_a_member"),
        ("/adapters/ab/revert", {"member": "a"}, 400, "not_reversible"),
        ("/adapters/nope/revert", {"member": "a"}, 404, "not_found"),
        (route, {"member": "a", "name": "a b"}, 422, "invalid_request"),
        (route, {"member": "a", "version": True}, 422, "invalid_request"),
        (route, {"member": "a", "version": "1"}, 422, "invalid_request"),
    ]:
        assert_error(client.post(path, headers=auth(token), json=body), status, code)
    assert client.get("/adapters").json()["total"] == before  # nothing registered


def test_a_merge_job_onto_weights_already_held_says_so_in_its_message(
    client, token, container, tmp_path
):
    """A job has no stderr: the registration's warnings (here, the RMM artifact that is not
    kept because `up` already holds these weights) go into its message."""
    from hub.core.names import AdapterRef

    assert (
        _merged(client, token, {"adapters": ["a", "b"], "method": "rmm", "name": "r1"})["state"]
        == "succeeded"
    )
    out = container.registry.export(AdapterRef("r1", None), tmp_path / "r1")
    assert upload(client, token, "up", out).status_code == 201
    job = _merged(client, token, {"adapters": ["a", "b"], "method": "rmm", "name": "up"})
    assert job["state"] == "succeeded", job
    assert "warning: up@1 already holds these weights without this merge's RMM" in job["message"]
