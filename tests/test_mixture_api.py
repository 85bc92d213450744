"""``POST /mixtures`` and the ``mixture`` job kind: submit -> poll -> a mixture with lineage;
up-front refusals (4xx, nothing queued); cancelling midway registers nothing."""

from __future__ import annotations

import time

import pytest

from hub.services.jobs import JobService
from tests.api_helpers import api_client, assert_error, auth, poll_job, stored_state
from tests.mixture_helpers import register_experts, use_tiny_base, write_task


@pytest.fixture
def setup(monkeypatch, container, tmp_path):
    use_tiny_base(monkeypatch)
    labels = register_experts(container, ("first", "last"))
    (tmp_path / "zoo" / "tasks").mkdir(parents=True)
    for task in ("first", "last"):
        write_task(tmp_path / "zoo" / "tasks", task)
    container.models.zoo_dir = tmp_path / "zoo"  # REST trains on zoo task names only
    body = {"experts": ["first-expert", "last-expert"], "name": "mx", "tasks": ["first", "last"],
            "steps": 20, "examples": 4, "lr": 0.05}  # fmt: skip
    return container, labels, body


def test_post_mixtures_runs_a_job_that_publishes_the_mixture(setup, token):
    container, labels, body = setup
    with api_client(container) as client:
        r = client.post("/mixtures", headers=auth(token), json={**body, "tags": ["moe"]})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert r.headers["location"] == f"/jobs/{job_id}"
        job = poll_job(client, job_id, timeout=300)
        assert (job["state"], job["kind"], job["result"]) == ("succeeded", "mixture", "mx@1"), job
        assert job["spec"]["experts"] == labels  # pinned at submit time
        assert list(job["spec"]["pinned_digests"]) == labels
        zoo = container.models.zoo_dir / "tasks"
        pinned = [f"{lab}={zoo / t}.json" for lab, t in zip(labels, body["tasks"], strict=True)]
        assert job["spec"]["tasks"] == pinned
        detail = client.get("/adapters/mx").json()
        assert detail["source"] == "mixture" and detail["mergeable"] is False
        assert [p["relation"] for p in detail["lineage"]["parents"]] == ["mixture", "mixture"]
        assert detail["metadata"]["mixture"]["experts"] == labels
        gate = client.get("/adapters/mx/files/adapter_model.safetensors")
        assert gate.status_code == 200 and len(gate.content) == detail["size_bytes"]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"experts": ["first-expert"]}, 400, "mixture_too_few_experts"),
        ({"experts": ["first-expert", "first-expert@1"]}, 400, "mixture_duplicate_expert"),
        ({"tasks": []}, 400, "mixture_task_missing"),
        ({"experts": ["first-expert", "ghost"]}, 404, "not_found"),
        ({"routing": "sideways"}, 422, "invalid_request"),
        ({"top_k": 3}, 400, "invalid_spec"),
        ({"steps": 0}, 422, "invalid_request"),
        ({"tasks": ["first", "/etc/passwd"]}, 400, "unknown_task"),
        ({"tasks": ["first", "last-expert=../zoo/tasks/last"]}, 400, "unknown_task"),
        ({"name": "../x"}, 422, "invalid_request"),
    ],
)
def test_bad_mixture_requests_fail_up_front(setup, token, tmp_path, change, status, code):
    container, _, body = setup
    with api_client(container, run_jobs=False) as client:
        before = stored_state(client, container.settings.home)
        r = client.post("/mixtures", headers=auth(token), json={**body, **change})
        assert_error(r, status, code)
        assert client.get("/jobs").json()["count"] == 0
        assert stored_state(client, container.settings.home) == before


def test_mixture_of_a_mixture_is_refused(setup, token):
    container, _, body = setup
    with api_client(container) as client:
        job = client.post("/mixtures", headers=auth(token), json=body).json()["job_id"]
        assert poll_job(client, job, timeout=300)["state"] == "succeeded"
        r = client.post(
            "/mixtures", headers=auth(token), json={**body, "experts": ["mx", "first-expert"]}
        )
        assert_error(r, 400, "mixture_of_mixtures")
        r = client.post("/mixtures", headers=auth(token))
        assert r.status_code == 422
        assert client.post("/mixtures", json=body).status_code == 401


def test_cancelling_midway_registers_nothing(setup):
    container, _, body = setup
    jobs = JobService(container)
    jobs.start()
    try:
        before = container.registry.ls(all_versions=True, limit=100)[0]
        blobs = sorted(container.blobs.iter_digests())
        job = jobs.submit("mixture", {**body, "steps": 100_000, "examples": 8})
        deadline = time.monotonic() + 120
        while jobs.get(job.id).progress < 0.2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert jobs.get(job.id).state == "running"
        jobs.cancel(job.id)
        done = jobs.wait(job.id, timeout=120)
    finally:
        jobs.shutdown()
    assert (done.state, done.result) == ("cancelled", None)
    assert container.registry.ls(all_versions=True, limit=100)[0] == before
    assert sorted(container.blobs.iter_digests()) == blobs
