"""Every way a pull can fail — HTTP 404/401/403/429, a dropped connection, a timeout, pickle-only
weights, malformed or corrupted files — gives one clear, specific error and registers nothing
(no catalog row, no blob) for that repository, while the other repositories of the same pull
still go ahead."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import huggingface_hub.constants
import huggingface_hub.file_download
import huggingface_hub.utils._http
import numpy as np
import pytest

from hub.core.errors import HfRateLimitedError, HfUnreachableError
from hub.services.sync import PullTargets
from storage.safetensors_io import serialize_safetensors
from tests.factories import make_tensors
from tests.hf_fixtures import adapter_files, all_versions, blob_files, hub_container, publish

REPO = "alice/lora"
WEIGHTS = r"/resolve/[^/]+/adapter_model\.safetensors$"


@pytest.fixture
def backoff_waits(monkeypatch) -> list[float]:
    """The client's own retry sleeps (1 s per resume attempt, Retry-After + 1 per 429...),
    recorded instead of slept: same requests, same outcome, no minutes of CI."""
    waits: list[float] = []

    class NoWait:
        def __getattr__(self, name: str):  # everything else is the real time module
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)

    monkeypatch.setattr(huggingface_hub.file_download, "time", NoWait())
    monkeypatch.setattr(huggingface_hub.utils._http, "time", NoWait())
    return waits


def pull_one(container, spec: str = REPO):
    [outcome] = container.sync.pull(PullTargets.checked(repos=[spec])).outcomes
    return outcome


def _bad_weights(hub, data: bytes) -> None:
    hub.add_repo(REPO, {**adapter_files(), "adapter_model.safetensors": data})


def _nan_weights(hub) -> None:
    tensors = make_tensors(seed=1)
    next(iter(tensors.values()))[0, 0] = np.nan
    _bad_weights(hub, serialize_safetensors(tensors))


CASES: dict[str, tuple[Callable, str, str]] = {
    # name: (set up the fake Hub, expected code, a phrase of the message)
    "repo 404": (lambda hub: None, "hf_repo_not_found", "was not found on the Hub"),
    "revision 404": (
        lambda hub: publish(hub, REPO),
        "hf_revision_not_found",
        "revision 'v9' of alice/lora does not exist",
    ),
    "file 404": (
        lambda hub: (
            publish(hub, REPO),
            hub.fail("HEAD", WEIGHTS, 404, **{"X-Error-Code": "EntryNotFound"}),
        ),
        "hf_file_not_found",
        "download adapter_model.safetensors",
    ),
    "403 on download": (
        lambda hub: (publish(hub, REPO), hub.fail("HEAD", WEIGHTS, 403)),
        "hf_forbidden",
        "HTTP 403",
    ),
    "private repo, no token": (
        lambda hub: publish(hub, "carol/lora", private=True),
        "hf_repo_not_found",
        "if it is private, that the token",
    ),
    "429 with Retry-After": (
        lambda hub: (
            publish(hub, REPO),
            hub.fail("GET", "^/api/models/", 429, **{"Retry-After": "30"}),
        ),
        "hf_rate_limited",
        "retry after 30 s",
    ),
    "pickle-only repo": (
        lambda hub: hub.add_repo(
            REPO,
            {
                "adapter_config.json": adapter_files()["adapter_config.json"],
                "adapter_model.bin": b"\x80\x04\x95 pickled",
            },
        ),
        "pickle_refused",
        "only pickled weights (adapter_model.bin)",
    ),
    "no PEFT files": (
        lambda hub: hub.add_repo(REPO, {"model.safetensors": b"x"}),
        "weights_missing",
        "not a PEFT adapter repository",
    ),
    "no config": (
        lambda hub: hub.add_repo(
            REPO, {"adapter_model.safetensors": adapter_files()["adapter_model.safetensors"]}
        ),
        "config_missing",
        "has no adapter_config.json",
    ),
    "config not JSON": (
        lambda hub: hub.add_repo(REPO, {**adapter_files(), "adapter_config.json": b"{nope"}),
        "config_invalid",
        "",
    ),
    "truncated safetensors": (
        lambda hub: _bad_weights(hub, adapter_files()["adapter_model.safetensors"][:-100]),
        "safetensors_truncated",
        "",
    ),
    "garbage header": (
        lambda hub: _bad_weights(hub, (12).to_bytes(8, "little") + b"not json!!!!"),
        "safetensors_header_not_json",
        "",
    ),
    "pickle named .safetensors": (
        lambda hub: _bad_weights(hub, b"\x80\x04\x95" + b"\x00" * 64),
        "pickle_refused",
        "",
    ),
    "NaN weights": (_nan_weights, "weights_not_finite", ""),
    "corrupted in transit": (
        lambda hub: (publish(hub, REPO), hub.corrupt(WEIGHTS)),
        "hf_digest_mismatch",
        "differs from the Hub's",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_failure_is_specific_and_registers_nothing(case, fake_hub, tmp_path, backoff_waits):
    setup, code, phrase = CASES[case]
    setup(fake_hub)
    container = hub_container(tmp_path / "home", fake_hub, token=None)
    spec = {"revision 404": f"{REPO}@v9", "private repo, no token": "carol/lora"}.get(case, REPO)

    outcome = pull_one(container, spec)

    assert (outcome.status, outcome.error.code, outcome.item) == ("failed", code, None)
    assert phrase in outcome.error.message
    assert all_versions(container) == [] and blob_files(container) == []
    if case == "pickle-only repo":  # refused from the file list: no file was even requested
        assert fake_hub.requests(contains="/resolve/") == []
    if case == "429 with Retry-After":
        assert outcome.error.details["retry_after"] == 30
    container.catalog.close()


def test_bad_token_is_refused_with_401(fake_hub, tmp_path):
    publish(fake_hub, REPO)
    container = hub_container(tmp_path / "home", fake_hub, token="hf_not_a_real_token")
    outcome = pull_one(container)
    assert outcome.error.code == "hf_unauthorized" and "HTTP 401" in outcome.error.message
    assert outcome.error.kind == "bad_input"
    assert all_versions(container) == []


def test_dropped_connection_is_resumed_once_then_refused_when_it_persists(
    fake_hub, hf_container, backoff_waits
):
    publish(fake_hub, REPO)
    fake_hub.drop(WEIGHTS, after_bytes=1000, times=1)
    resumed = pull_one(hf_container)
    assert resumed.status == "created"  # the client retried the body (resuming if it kept any)
    assert len(fake_hub.requests("GET", "adapter_model.safetensors")) == 2
    assert backoff_waits == [1]
    stored = hf_container.registry.blobs.get(resumed.item.digest)
    assert stored == fake_hub.files_at(REPO, resumed.revision)["adapter_model.safetensors"]

    publish(fake_hub, "alice/flaky", seed=2)
    fake_hub.drop(WEIGHTS, after_bytes=1000)  # every attempt dies mid-body
    before = (all_versions(hf_container), blob_files(hf_container))
    outcome = pull_one(hf_container, "alice/flaky")
    assert (outcome.status, outcome.error.code) == ("failed", "hf_connection_dropped")
    assert "dropped during download adapter_model.safetensors" in outcome.error.message
    assert isinstance(outcome.error, HfUnreachableError)
    # huggingface_hub tried 6 times (5 retries, 1 s apart), then gave up.
    assert len(fake_hub.requests("GET", "alice/flaky/resolve/")) == 1 + 6  # config + weights
    assert len(backoff_waits) == 1 + 5
    assert (all_versions(hf_container), blob_files(hf_container)) == before


def test_timeout_and_refused_connection(fake_hub, tmp_path):
    publish(fake_hub, REPO)
    fake_hub.stall("GET", "^/api/models/", 1.0, times=1)
    container = hub_container(tmp_path / "home", fake_hub, hf_timeout_s=0.2)
    assert pull_one(container).error.code == "hf_timeout"
    container.settings.hf_endpoint = "http://127.0.0.1:9"  # nothing listens there
    del container.sync  # rebuilt from the changed settings
    outcome = pull_one(container)
    assert outcome.error.code == "hf_connection_refused" and "hf_endpoint" in outcome.error.message
    assert all_versions(container) == []


def test_rate_limited_listing_fails_the_pull_after_the_clients_retries(
    fake_hub, hf_container, backoff_waits
):
    publish(fake_hub, REPO)
    fake_hub.fail("GET", "^/api/models$", 429, **{"Retry-After": "2"})
    with pytest.raises(HfRateLimitedError) as e:
        hf_container.sync.pull(PullTargets.checked(author="alice"))
    assert e.value.details["retry_after"] == 2 and "retry after 2 s" in e.value.message
    assert backoff_waits == [3.0] * 5  # Retry-After + 1, five times, as huggingface_hub does
    assert len(fake_hub.requests("GET", "/api/models?")) == 6


def test_transient_429_on_download_is_retried_by_the_client(fake_hub, hf_container, backoff_waits):
    publish(fake_hub, REPO)
    fake_hub.fail("GET", WEIGHTS, 429, times=1, **{"Retry-After": "0"})
    assert pull_one(hf_container).status == "created"
    assert backoff_waits == [1.0]


def test_one_bad_repo_does_not_stop_the_others(fake_hub, hf_container):
    publish(fake_hub, "alice/good-1", seed=1)
    _bad_weights(fake_hub, b"\x80\x04\x95" + b"\x00" * 64)  # alice/lora: pickle bytes
    publish(fake_hub, "alice/good-2", seed=2)
    repos = ["alice/good-1", "alice/missing", REPO, "alice/good-2"]
    report = hf_container.sync.pull(PullTargets.checked(repos=repos))
    assert [(o.repo, o.status) for o in report.outcomes] == [
        ("alice/good-1", "created"),
        ("alice/missing", "failed"),
        (REPO, "failed"),
        ("alice/good-2", "created"),
    ]
    assert [o.error.code for o in report.failed] == ["hf_repo_not_found", "pickle_refused"]
    assert report.summary() == (
        "2 created, 0 skipped, 2 failed (first failure: alice/missing: hf_repo_not_found)"
    )
    assert [n for n, _, _ in all_versions(hf_container)] == ["alice--good-1", "alice--good-2"]
    assert len(blob_files(hf_container)) == 2
    docs = [o.to_dict() for o in report.outcomes]
    assert json.loads(json.dumps(docs))[1]["error"]["code"] == "hf_repo_not_found"


def test_offline_mode_is_reported(fake_hub, hf_container, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    outcome = pull_one(hf_container)
    assert outcome.error.code == "hf_offline" and "HF_HUB_OFFLINE" in outcome.error.message
    assert fake_hub.log == []
