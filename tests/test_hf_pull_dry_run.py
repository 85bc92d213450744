"""``sync pull --dry-run``: the same checks a pull makes before the weights arrive, the same
outcomes, and nothing downloaded past a header or written -- then a real pull does what it said.
Real huggingface_hub client against the loopback fake Hub, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from hub.services.sync import PullTargets
from storage.safetensors_io import serialize_safetensors
from tests.api_helpers import api_client, auth, new_token, poll_job
from tests.cli_helpers import cli
from tests.factories import TINY_BASE, TINY_CONFIG, make_tensors, peft_config
from tests.hf_fixtures import ALICE, adapter_files, all_versions, blob_files, hub_container, publish


def pull(container, **kw):
    return container.sync.pull(PullTargets.checked(**kw))


def served(hub, name: str) -> int:
    return sum(n for path, n in hub.served if path == name)


def big_adapter() -> dict[str, bytes]:
    """Rank 128 on the tiny base's q/v: 230 kB of weights, over the 100 kB a header read takes."""
    return {
        "adapter_config.json": json.dumps(peft_config(r=128)).encode(),
        "adapter_model.safetensors": serialize_safetensors(make_tensors(r=128, seed=3)),
    }


def state(container) -> tuple[list, list, list]:
    """Everything a pull could write: versions, blobs, and the cards."""
    items, _ = container.catalog.list_items(all_versions=True, limit=1000)
    cards = [(i.name, i.description, i.tags, i.license) for i in items]
    return all_versions(container), blob_files(container), cards


def test_dry_run_plans_without_downloading_weights_then_the_pull_matches(fake_hub, hf_container):
    hf_container.registry.register_base_model(TINY_BASE, TINY_CONFIG)
    files = big_adapter()
    size = len(files["adapter_model.safetensors"])
    sha = fake_hub.add_repo("alice/big", files)
    publish(fake_hub, "alice/qa", seed=2)

    plan = pull(hf_container, repos=["alice/big", "alice/qa", "alice/nope"], dry_run=True)

    assert plan.dry_run
    big, qa, nope = plan.outcomes
    assert (big.status, big.revision, big.item, big.planned) == ("created", sha, None, "alice--big")
    assert big.weights_bytes == size
    assert big.reason == f"would download {size / 1e6:.1f} MB of weights and register a new " \
        "adapter alice--big"  # fmt: skip
    assert big.to_dict()["adapter"] == "alice--big" and big.to_dict()["weights_bytes"] == size
    assert (qa.status, qa.planned) == ("created", "alice--qa")
    assert (nope.status, nope.error.code) == ("failed", "hf_repo_not_found")
    total = (size + qa.weights_bytes) / 1e6
    assert plan.summary() == (
        "dry run, nothing downloaded or registered: would be 2 created, 0 skipped, 1 failed; "
        f"{total:.1f} MB of weights to download (first failure: alice/nope: hf_repo_not_found)"
    )
    # The shapes were checked from each header (one ranged read of 100 kB, which for qa's small
    # file is all of it); big's 230 kB of weights were never fetched.
    assert served(fake_hub, "adapter_model.safetensors") == 100_001 + qa.weights_bytes
    assert qa.weights_bytes < 100_001 < size
    assert state(hf_container) == ([], [], [])

    real = pull(hf_container, repos=["alice/big", "alice/qa"])
    assert [(o.status, o.item.name, o.weights_bytes) for o in real.outcomes] == [
        ("created", "alice--big", size),
        ("created", "alice--qa", qa.weights_bytes),
    ]
    again = pull(hf_container, repos=["alice/big"], dry_run=True).outcomes[0]
    assert (again.status, again.item.name, again.item.version) == ("skipped", "alice--big", 1)
    assert "already registered at this revision" in again.reason


def test_dry_run_names_a_new_version_of_an_adapter_already_here(fake_hub, hf_container):
    publish(fake_hub, "alice/evolving", seed=1)
    pull(hf_container, repos=["alice/evolving"])
    fake_hub.commit("alice/evolving", adapter_files(seed=2))
    before = state(hf_container)
    out = pull(hf_container, repos=["alice/evolving"], dry_run=True).outcomes[0]
    assert out.status == "created" and out.reason.endswith("a new version of alice--evolving")
    assert state(hf_container) == before


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ({"adapter_model.bin": b"\x80\x04pickle", "adapter_config.json": b"{}"}, "pickle_refused"),
        ({**adapter_files(), "adapter_config.json": b"{not json"}, "config_invalid"),
        (adapter_files(peft_type="PREFIX_TUNING"), "unsupported_peft_type"),
        (adapter_files(card='---\ntags: [ok, "a\\0b"]\n---\nA card.\n'), "bad_card"),
    ],  # fmt: skip
    ids=["pickle-only", "bad-config", "not-lora", "nul-in-a-card-tag"],
)
def test_dry_run_fails_what_the_pull_would_fail_and_writes_nothing(
    fake_hub, hf_container, files, code
):
    fake_hub.add_repo("alice/bad", files)
    planned = pull(hf_container, repos=["alice/bad"], dry_run=True).outcomes[0]
    real = pull(hf_container, repos=["alice/bad"]).outcomes[0]
    assert (planned.status, planned.error.code) == ("failed", code)
    assert (real.status, real.error.code) == ("failed", code)
    assert (planned.planned, planned.weights_bytes) == (None, None)
    assert state(hf_container) == ([], [], [])


def test_dry_run_refuses_a_misfit_for_a_registered_base_from_the_header(fake_hub, hf_container):
    hf_container.registry.register_base_model(TINY_BASE, dict(TINY_CONFIG, hidden_size=32))
    files = big_adapter()
    fake_hub.add_repo("alice/misfit", files)
    out = pull(hf_container, repos=["alice/misfit"], dry_run=True).outcomes[0]
    assert (out.status, out.error.code) == ("failed", "incompatible_base_model")
    assert served(fake_hub, "adapter_model.safetensors") <= 100_001


def test_dry_run_checks_shapes_against_the_base_the_card_names(fake_hub, hf_container):
    """The config names a local path, the card a registered base the factors do not fit: the
    pull registers under the card's base and refuses, so the dry run refuses too."""
    hf_container.registry.register_base_model(TINY_BASE, dict(TINY_CONFIG, hidden_size=32))
    card = f"---\nbase_model: {TINY_BASE}\n---\nA trained adapter.\n"
    fake_hub.add_repo("alice/local", adapter_files(4, card=card, base="/home/me/ckpt/llama"))
    planned = pull(hf_container, repos=["alice/local"], dry_run=True).outcomes[0]
    real = pull(hf_container, repos=["alice/local"]).outcomes[0]
    assert (planned.status, planned.error.code) == ("failed", "incompatible_base_model")
    assert (real.status, real.error.code) == ("failed", "incompatible_base_model")
    assert state(hf_container) == ([], [], [])


def test_dry_run_with_update_card_says_what_it_would_set_and_sets_nothing(fake_hub, hf_container):
    publish(fake_hub, "alice/stable")
    pull(hf_container, repos=["alice/stable"])
    fake_hub.commit("alice/stable", {"README.md": b"---\nlicense: apache-2.0\n---\nNew words.\n"})
    before = state(hf_container)

    kept = pull(hf_container, repos=["alice/stable"], dry_run=True).outcomes[0]
    assert kept.status == "skipped" and "same weights" in kept.reason
    assert any("--update-card" in w for w in kept.warnings)
    taken = pull(hf_container, repos=["alice/stable"], update_card=True, dry_run=True).outcomes[0]
    assert taken.status == "updated"
    assert taken.reason == "would set the card (description and license) from the Hub card"
    assert taken.weights_bytes is None  # the weights are here: nothing to download
    assert state(hf_container) == before

    # A Hub card with more tags than a card holds keeps its first 64, in a dry run as in the
    # pull; nothing is written.
    tags = "[" + ", ".join(f"t{i}" for i in range(65)) + "]"
    fake_hub.commit("alice/stable", {"README.md": f"---\ntags: {tags}\n---\nx\n".encode()})
    trimmed = pull(hf_container, repos=["alice/stable"], update_card=True, dry_run=True)
    assert trimmed.outcomes[0].status == "updated" and trimmed.outcomes[0].error is None
    assert state(hf_container) == before


def test_cli_dry_run_json_text_and_exit_codes(fake_hub, tmp_path):
    env = {"HF_ENDPOINT": fake_hub.url, "HF_TOKEN": ALICE}
    sha = publish(fake_hub, "alice/qa")
    run = cli(tmp_path, "sync", "pull", "--repo", "alice/qa", "--dry-run", "--json", env=env)
    assert run.code == 0, run.stderr
    doc = run.json()
    assert (doc["dry_run"], doc["count"], doc["data"]) == (True, 0, [])
    [outcome] = doc["outcomes"]
    assert (outcome["status"], outcome["adapter"], outcome["revision"]) == (
        "created",
        "alice--qa",
        sha,
    )
    assert outcome["weights_bytes"] == len(fake_hub.files_at("alice/qa", sha)[
        "adapter_model.safetensors"])  # fmt: skip
    text = cli(tmp_path, "sync", "pull", "--repo", "alice/qa", "--dry-run", env=env)
    assert f"created  alice/qa@{sha[:12]} alice--qa would download" in text.stdout
    assert "dry run, nothing downloaded or registered: would be 1 created" in text.stdout
    assert cli(tmp_path, "ls", "--json", env=env).json()["count"] == 0

    missing = cli(tmp_path, "sync", "pull", "--repo", "alice/nope", "--dry-run", env=env)
    assert missing.code == 2 and "hf_repo_not_found" in missing.stderr


def test_rest_dry_run_job_reports_and_registers_nothing(fake_hub, tmp_path):
    publish(fake_hub, "alice/qa")
    container = hub_container(tmp_path / "home", fake_hub, ALICE)
    try:
        with api_client(container) as client:
            body = {"action": "pull", "repos": ["alice/qa"], "dry_run": True}
            r = client.post("/sync", headers=auth(new_token(container)), json=body)
            job = poll_job(client, r.json()["job_id"])
            assert (job["state"], job["result"]) == ("succeeded", None)
            assert job["message"].startswith("dry run, nothing downloaded or registered")
            assert job["spec"]["report"][0]["adapter"] == "alice--qa"
            assert client.get("/adapters").json()["count"] == 0
    finally:
        container.catalog.close()
