"""The sync contract from the shell (``loradex sync pull|push``: --json shapes, exit codes, one
stderr line) and over REST (``POST /sync`` -> 202, a ``sync`` job with per-repo outcomes)."""

from __future__ import annotations

import threading

import pytest

from hub.services.jobs import JobService, execute_job
from tests.api_helpers import api_client, assert_error, auth, new_token, poll_job
from tests.cli_helpers import cli
from tests.factories import TINY_BASE, write_adapter_dir
from tests.hf_fixtures import ALICE, hub_container, publish

ITEM_KEYS = {"name", "version", "base_model", "description", "tags", "source"}


@pytest.fixture
def hub_env(fake_hub):
    """The plain Hugging Face variables, which loradex falls back to."""
    return {"HF_ENDPOINT": fake_hub.url, "HF_TOKEN": ALICE}


def test_cli_pull_json_then_skip(fake_hub, tmp_path, hub_env):
    sha = publish(fake_hub, "alice/qa")
    run = cli(tmp_path, "sync", "pull", "--repo", "alice/qa", "--json", env=hub_env)
    assert run.code == 0, run.stderr
    doc = run.json()
    assert doc["count"] == 1 and set(doc["data"][0]) >= ITEM_KEYS
    item = doc["data"][0]
    assert (item["name"], item["version"], item["source"]) == (
        "alice--qa",
        1,
        f"hf://alice/qa@{sha}",
    )
    assert item["base_model"] == TINY_BASE and item["tags"] == ["demo", "qa"]
    assert doc["outcomes"][0]["status"] == "created" and doc["outcomes"][0]["revision"] == sha

    again = cli(tmp_path, "sync", "pull", "--repo", f"alice/qa@{sha}", "--json", env=hub_env)
    assert again.code == 0 and again.json()["data"] == []
    assert again.json()["outcomes"][0]["adapter"] == "alice--qa@1"
    assert again.json()["outcomes"][0]["status"] == "skipped"

    text = cli(tmp_path, "sync", "pull", "--author", "alice", env=hub_env)
    assert text.code == 0 and f"skipped  alice/qa@{sha[:12]} alice--qa@1" in text.stdout
    assert "0 created, 1 skipped, 0 failed" in text.stdout

    edit = cli(tmp_path, "edit", "alice--qa", "--description", "Mine.", "--json", env=hub_env)
    assert edit.code == 0 and edit.json()["description"] == "Mine."
    taken = cli(tmp_path, "sync", "pull", "--repo", "alice/qa", "--update-card", env=hub_env)
    assert taken.code == 0, taken.stderr
    assert f"updated  alice/qa@{sha[:12]} alice--qa@1 card (description) set from" in taken.stdout
    assert "0 created, 1 updated, 0 skipped, 0 failed" in taken.stdout
    shown = cli(tmp_path, "show", "alice--qa", "--json", env=hub_env).json()
    assert shown["description"] == "Adapter alice/qa answers questions."


def test_cli_pull_failures_exit_codes(fake_hub, tmp_path, hub_env):
    publish(fake_hub, "alice/qa")
    missing = cli(tmp_path, "sync", "pull", "--repo", "alice/missing", "--json", env=hub_env)
    assert missing.code == 2
    assert missing.stderr.strip().count("\n") == 0
    assert missing.stderr.startswith("error [hf_repo_not_found]: alice/missing: repository")
    assert missing.json()["data"] == [] and missing.json()["outcomes"][0]["status"] == "failed"

    write_adapter_dir(tmp_path / "alice--qa", seed=5)
    assert cli(tmp_path, "add", tmp_path / "alice--qa").code == 0
    taken = cli(tmp_path, "sync", "pull", "--repo", "alice/qa", "--repo", "alice/x", env=hub_env)
    assert taken.code == 1  # a conflict among the failures: exit 1
    assert taken.stderr.startswith("error [name_taken]: alice/qa:")
    assert "(+1 more failed)" in taken.stderr

    refused = cli(tmp_path, "sync", "pull", "--json", env=hub_env)
    assert refused.code == 2 and "nothing to pull" in refused.stderr and refused.stdout == ""
    bad = cli(tmp_path, "sync", "pull", "--repo", "nonamespace", env=hub_env)
    assert bad.code == 2 and bad.stderr.startswith("error [invalid_repo_id]")
    assert len(fake_hub.requests(contains="nonamespace")) == 0


def test_cli_push(fake_hub, tmp_path, hub_env):
    assert cli(tmp_path, "add", write_adapter_dir(tmp_path / "qa", seed=3)).code == 0
    run = cli(tmp_path, "sync", "push", "qa", "alice/qa", "--private", "--json", env=hub_env)
    assert run.code == 0, run.stderr
    doc = run.json()
    assert doc["adapter"] == "qa@1" and doc["private"] is True
    assert doc["source"] == f"hf://alice/qa@{fake_hub.refs('alice/qa')['main']}"
    assert fake_hub.meta("alice/qa")["private"] is True

    no_token = cli(tmp_path, "sync", "push", "qa", "alice/qa2", env={"HF_ENDPOINT": fake_hub.url})
    assert no_token.code == 2 and no_token.stderr.startswith("error [hf_unauthorized]")
    # LORADEX_HF_* win over the plain variables.
    env = {**hub_env, "LORADEX_HF_TOKEN": "tok-bob"}
    as_bob = cli(tmp_path, "sync", "push", "qa", "alice/qa3", env=env)
    assert as_bob.code == 2 and as_bob.stderr.startswith("error [hf_forbidden]")


@pytest.fixture
def api(fake_hub, tmp_path):
    container = hub_container(tmp_path / "home", fake_hub, ALICE)
    token = new_token(container)
    with api_client(container) as client:
        yield client, token
    container.catalog.close()


def test_rest_sync_pull_and_push_jobs(fake_hub, api, tmp_path):
    client, token = api
    sha = publish(fake_hub, "alice/qa")
    publish(fake_hub, "alice/other", seed=2)
    r = client.post(
        "/sync", headers=auth(token), json={"action": "pull", "repos": ["alice/qa", "alice/nope"]}
    )
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{r.json()['job_id']}"
    job = poll_job(client, r.json()["job_id"])
    assert (job["state"], job["result"], job["progress"]) == ("succeeded", "alice--qa@1", 1.0)
    assert job["message"].startswith("1 created, 0 skipped, 1 failed")
    report = job["spec"]["report"]
    assert [(o["repo"], o["status"]) for o in report] == [
        ("alice/qa", "created"),
        ("alice/nope", "failed"),
    ]
    assert report[0]["revision"] == sha and report[1]["error"]["code"] == "hf_repo_not_found"
    assert client.get("/adapters/alice--qa").json()["source"] == f"hf://alice/qa@{sha}"

    filtered = client.post("/sync", headers=auth(token), json={"action": "pull", "author": "alice"})
    job = poll_job(client, filtered.json()["job_id"])
    assert job["state"] == "succeeded" and job["result"] == "alice--other@1"

    fake_hub.commit("alice/qa", {"README.md": b"---\nlicense: mit\n---\nNew words.\n"})
    card_only = {"action": "pull", "repos": ["alice/qa"], "update_card": True}
    job = poll_job(
        client, client.post("/sync", headers=auth(token), json=card_only).json()["job_id"]
    )
    assert (job["state"], job["result"]) == ("succeeded", None)  # no version created
    assert job["message"] == "0 created, 1 updated, 0 skipped, 0 failed"
    assert job["spec"]["report"][0]["status"] == "updated"
    assert client.get("/adapters/alice--qa").json()["description"] == "New words."

    push = client.post(
        "/sync",
        headers=auth(token),
        json={"action": "push", "adapter": "alice--qa", "repo": "alice/copy"},
    )
    job = poll_job(client, push.json()["job_id"])
    assert job["state"] == "succeeded" and job["result"] == "alice--qa@1"
    assert job["spec"]["adapter"] == "alice--qa@1"  # pinned at submit time
    digest = client.get("/adapters/alice--qa").json()["digest"]
    assert job["spec"]["pinned_digests"] == {"alice--qa@1": digest}
    assert (
        job["message"]
        == f"pushed alice--qa@1 to hf://alice/copy@{fake_hub.refs('alice/copy')['main']}"
    )


def test_rest_sync_job_that_only_fails_is_failed(fake_hub, api):
    client, token = api
    r = client.post("/sync", headers=auth(token), json={"action": "pull", "repos": ["alice/nope"]})
    job = poll_job(client, r.json()["job_id"])
    assert job["state"] == "failed" and job["error"].startswith("hf_repo_not_found: repository")
    assert job["spec"]["report"][0]["status"] == "failed"
    assert client.get("/adapters").json()["data"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"action": "pull"}, 400, "invalid_sync_request"),
        ({"action": "pull", "repos": ["a/b"], "author": "x"}, 400, "invalid_sync_request"),
        ({"action": "pull", "repos": ["a/b"], "adapter": "x"}, 422, "invalid_request"),
        ({"action": "pull", "repos": ["a/b--c"]}, 400, "invalid_repo_id"),
        ({"action": "push", "repo": "alice/x"}, 422, "invalid_request"),
        ({"action": "push", "adapter": "a", "repo": "alice/x--y"}, 400, "invalid_repo_id"),
        ({"action": "push", "adapter": "missing", "repo": "alice/x"}, 404, "not_found"),
        ({"action": "push", "adapter": "a", "repo": "alice/x", "limit": 0}, 422, "invalid_request"),
        ({"action": "sideways"}, 422, "invalid_request"),
        ({"action": "pull", "repos": ["has space/x"]}, 422, "invalid_request"),
        ({"action": "pull", "author": "x", "extra": 1}, 422, "invalid_request"),
    ],
)
def test_rest_sync_validation(api, fake_hub, body, status, code):
    client, token = api
    assert_error(client.post("/sync", headers=auth(token), json=body), status, code)
    assert client.get("/jobs").json()["data"] == [] and fake_hub.log == []


def test_rest_sync_needs_a_token(api):
    client, _ = api
    assert_error(client.post("/sync", json={"action": "pull", "author": "x"}), 401, "unauthorized")


def test_sync_job_cancels_between_repositories(fake_hub, tmp_path):
    container = hub_container(tmp_path / "home", fake_hub, ALICE)
    for i in range(3):
        publish(fake_hub, f"alice/r{i}", seed=i + 1)
    jobs = JobService(container)  # not started: the job runs here, deterministically
    job = jobs.submit("sync", {"action": "pull", "repos": ["alice/r0", "alice/r1", "alice/r2"]})
    cancel = threading.Event()

    def cancel_on_second_repo(method: str, path: str) -> None:
        if path == "/api/models/alice/r1":
            cancel.set()  # as `POST /jobs/{id}/cancel` does for a running job

    fake_hub.on_request = cancel_on_second_repo
    record = execute_job(container, job.id, cancel)
    assert record.state == "cancelled"
    # r1 was being pulled when the cancel came: it finished (atomically); r2 never started.
    assert [i.name for i in container.catalog.list_items()[0]] == ["alice--r0", "alice--r1"]
    assert fake_hub.requests(contains="alice/r2") == []
    container.catalog.close()
