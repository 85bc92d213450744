"""``sync pull`` with the real huggingface_hub client against a fake Hub on loopback: pinned
revisions, skip-by-revision, filters and pagination, names, and every failure registering
nothing for its repository."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from hub.core.errors import BadInputError
from hub.core.models import AdapterMeta
from hub.services.sync import PullTargets, derived_name
from storage.hf_hub import parse_repo_spec
from storage.safetensors_io import serialize_safetensors
from tests.factories import TINY_BASE, TINY_CONFIG, make_tensors, peft_config, write_adapter_dir
from tests.hf_fixtures import adapter_files, all_versions, blob_files, publish


def pull(container, **kw):
    return container.sync.pull(PullTargets.checked(**kw))


def weights_sha(hub, repo_id, sha):
    return hashlib.sha256(hub.files_at(repo_id, sha)["adapter_model.safetensors"]).hexdigest()


def test_pull_registers_pinned_repo_with_card_metadata(fake_hub, hf_container):
    sha = publish(fake_hub, "alice/qa-lora", seed=3)
    fake_hub.commit("alice/qa-lora", {"training_args.bin": b"\x80\x04pickle", "notes.txt": b"x"})
    head = fake_hub.refs("alice/qa-lora")["main"]

    report = pull(hf_container, repos=["alice/qa-lora"])

    [outcome] = report.outcomes
    assert (outcome.status, outcome.revision, outcome.requested) == ("created", head, None)
    item = outcome.item
    assert (item.name, item.version) == ("alice--qa-lora", 1)
    assert item.source == f"hf://alice/qa-lora@{head}"
    assert item.base_model == TINY_BASE
    assert item.description == "Adapter alice/qa-lora answers questions."  # placeholders skipped
    assert item.tags == ["demo", "qa"]  # the Hub's derived base_model:* tag dropped
    assert item.license == "mit"
    assert item.digest == weights_sha(fake_hub, "alice/qa-lora", sha)
    assert item.metadata["hf"] == {
        "repo": "alice/qa-lora",
        "revision": head,
        "requested": None,
        "endpoint": fake_hub.url,
    }
    assert hf_container.catalog.get_detail(item.name).config["base_model_name_or_path"] == TINY_BASE
    # Only the two PEFT files and the card were fetched, at the pinned sha.
    fetched = {p.rsplit("/", 1)[1] for p in fake_hub.requests(contains="/resolve/")}
    assert fetched == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    assert all(f"/resolve/{head}/" in p for p in fake_hub.requests(contains="/resolve/"))


def test_pull_at_pinned_sha_then_head_then_skip(fake_hub, hf_container):
    first = publish(fake_hub, "alice/evolving", seed=1)
    second = fake_hub.commit("alice/evolving", adapter_files(seed=2))

    old = pull(hf_container, repos=[f"alice/evolving@{first}"]).outcomes[0]
    assert (old.status, old.revision, old.requested) == ("created", first, first)
    assert old.item.digest == weights_sha(fake_hub, "alice/evolving", first)

    new = pull(hf_container, repos=["alice/evolving@main"]).outcomes[0]
    assert (new.status, new.revision, new.item.version) == ("created", second, 2)
    assert new.item.digest == weights_sha(fake_hub, "alice/evolving", second)

    downloads = len(fake_hub.requests("GET", "/resolve/"))
    again = pull(hf_container, repos=["alice/evolving", f"alice/evolving@{first}"])
    assert [(o.status, o.revision) for o in again.outcomes] == [
        ("skipped", second),
        ("skipped", first),
    ]
    assert [o.item.version for o in again.outcomes] == [2, 1]
    assert "already registered at this revision" in again.outcomes[0].reason
    assert len(fake_hub.requests("GET", "/resolve/")) == downloads  # nothing re-downloaded
    assert all_versions(hf_container) == [
        ("alice--evolving", 1, f"hf://alice/evolving@{first}"),
        ("alice--evolving", 2, f"hf://alice/evolving@{second}"),
    ]


def test_new_commit_with_same_weights_adds_no_version(fake_hub, hf_container):
    publish(fake_hub, "alice/stable")
    pull(hf_container, repos=["alice/stable"])
    fake_hub.commit("alice/stable", {"README.md": b"---\nlicense: mit\n---\nNew words.\n"})
    downloads = len(fake_hub.requests("GET", "/resolve/"))
    outcome = pull(hf_container, repos=["alice/stable"]).outcomes[0]
    assert outcome.status == "skipped" and "same weights" in outcome.reason
    assert [v for _, v, _ in all_versions(hf_container)] == [1]
    # known by the LFS sha256 of the weights: only the card is fetched, for the warning below
    assert fetched_files(fake_hub, downloads) == ["README.md"]
    # the card is kept (no --update-card), and the outcome says the Hub's differs
    item = hf_container.catalog.get_item("alice--stable")
    assert item.description == "Adapter alice/stable answers questions."
    (card_warning,) = card_warnings(outcome)
    assert "another description than alice--stable's card, which was kept" in card_warning
    assert "--update-card" in card_warning


NEW_CARD = b"---\nlicense: apache-2.0\ntags: [reading]\n---\nReads receipts aloud.\n"


def fetched_files(hub, since: int) -> list[str]:
    return [path.rsplit("/", 1)[-1] for path in hub.requests("GET", "/resolve/")[since:]]


def test_weights_without_an_lfs_sha256_are_downloaded_to_compare(
    fake_hub, hf_container, monkeypatch
):
    """A Hub that gives no sha256 for the weights (not in LFS): downloaded, then found equal."""
    publish(fake_hub, "alice/stable")
    pull(hf_container, repos=["alice/stable"])
    fake_hub.commit("alice/stable", {"README.md": NEW_CARD})
    resolve = hf_container.sync.client.resolve

    def without_sha256(repo_id, revision=None):
        snapshot = resolve(repo_id, revision)
        files = {n: dataclasses.replace(f, sha256=None) for n, f in snapshot.files.items()}
        return dataclasses.replace(snapshot, files=files)

    monkeypatch.setattr(hf_container.sync.client, "resolve", without_sha256)
    downloads = len(fake_hub.requests("GET", "/resolve/"))
    outcome = pull(hf_container, repos=["alice/stable"], update_card=True).outcomes[0]
    assert sorted(fetched_files(fake_hub, downloads)) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert outcome.status == "updated" and outcome.item.version == 1
    assert hf_container.catalog.get_item("alice--stable").description == "Reads receipts aloud."


def card_warnings(outcome):
    return [w for w in outcome.warnings if "card" in w]


def test_update_card_takes_the_hub_card_for_weights_already_here(fake_hub, hf_container):
    """A README-only commit: --update-card sets the card's non-empty fields, re-embeds it for
    search, adds no version; a second pull changes nothing; a commit whose card says the same
    is skipped without a warning."""
    publish(fake_hub, "alice/stable")
    publish(fake_hub, "alice/other", seed=2)
    pull(hf_container, repos=["alice/stable", "alice/other"])
    before = hf_container.catalog.get_item("alice--stable")
    fake_hub.commit("alice/stable", {"README.md": NEW_CARD})
    report = pull(hf_container, repos=["alice/stable"], update_card=True)
    outcome = report.outcomes[0]
    assert outcome.status == "updated", outcome.reason
    assert outcome.reason == (
        "card (description and tags and license) set from the Hub card; weights as alice--stable@1"
    )
    assert card_warnings(outcome) == []
    assert report.summary() == "0 created, 1 updated, 0 skipped, 0 failed"
    assert outcome.to_dict()["status"] == "updated"
    item = hf_container.catalog.get_item("alice--stable")
    assert (item.description, item.tags, item.license) == (
        "Reads receipts aloud.",
        ["reading"],
        "apache-2.0",
    )
    assert (item.version, item.digest) == (1, before.digest)  # no new version
    assert outcome.item.description == "Reads receipts aloud."
    hits = hf_container.search.search("Reads receipts aloud.", mode="text", k=2)
    assert [h.item.name for h in hits] == ["alice--stable", "alice--other"]
    assert hits[0].item.description == "Reads receipts aloud."

    again = pull(hf_container, repos=["alice/stable"], update_card=True).outcomes[0]
    assert again.status == "skipped" and card_warnings(again) == []


def test_update_card_for_a_revision_already_registered_fetches_only_the_card(
    fake_hub, hf_container
):
    """A local edit, then a pull of the same revision: left alone without --update-card (no
    download at all); with it, only README.md is fetched and the Hub's card comes back."""
    publish(fake_hub, "alice/stable")
    pull(hf_container, repos=["alice/stable"])
    hf_container.registry.edit_card("alice--stable", description="My own words.", tags=[])
    downloads = len(fake_hub.requests("GET", "/resolve/"))

    kept = pull(hf_container, repos=["alice/stable"]).outcomes[0]
    assert kept.status == "skipped" and "already registered" in kept.reason
    assert len(fake_hub.requests("GET", "/resolve/")) == downloads
    assert hf_container.catalog.get_item("alice--stable").description == "My own words."

    taken = pull(hf_container, repos=["alice/stable"], update_card=True).outcomes[0]
    assert taken.status == "updated"
    assert fetched_files(fake_hub, downloads) == ["README.md"]
    item = hf_container.catalog.get_item("alice--stable")
    assert (item.description, item.tags) == (
        "Adapter alice/stable answers questions.",
        ["demo", "qa"],
    )


def test_update_card_keeps_fields_the_hub_card_leaves_empty(fake_hub, hf_container):
    publish(fake_hub, "alice/stable")
    pull(hf_container, repos=["alice/stable"])
    fake_hub.commit("alice/stable", {"README.md": b"---\nlibrary_name: peft\n---\nNew words.\n"})
    outcome = pull(hf_container, repos=["alice/stable"], update_card=True).outcomes[0]
    assert outcome.status == "updated"
    item = hf_container.catalog.get_item("alice--stable")
    assert (item.description, item.tags, item.license) == ("New words.", ["demo", "qa"], "mit")


def test_a_card_with_more_tags_than_a_card_holds_keeps_its_first_64(fake_hub, hf_container):
    """A Hub card is best effort (its description and license are trimmed too): 70 tags keep
    the first 64 in the card's order, for a new pull and for --update-card, instead of failing
    the repo."""
    tags = "".join(f"\n- t{i:02d}" for i in reversed(range(70)))  # t69 first
    publish(fake_hub, "alice/many")
    fake_hub.commit("alice/many", {"README.md": f"---\ntags:{tags}\n---\nMany.\n".encode()})
    assert pull(hf_container, repos=["alice/many"]).outcomes[0].status == "created"
    kept = sorted(f"t{i:02d}" for i in range(6, 70))
    assert hf_container.catalog.get_item("alice--many").tags == kept
    publish(fake_hub, "alice/stable")
    pull(hf_container, repos=["alice/stable"])
    fake_hub.commit("alice/stable", {"README.md": f"---\ntags:{tags}\n---\nMany.\n".encode()})
    outcome = pull(hf_container, repos=["alice/stable"], update_card=True).outcomes[0]
    assert outcome.status == "updated"
    item = hf_container.catalog.get_item("alice--stable")
    assert (item.description, item.tags) == ("Many.", kept)


def test_pull_by_filters_follows_pages(fake_hub, hf_container):
    for i in range(5):  # page_size is 2: three pages
        publish(fake_hub, f"alice/lora-{i}", seed=i + 1)
    publish(fake_hub, "bob/other-base", seed=9, card=False, base="other-base")
    fake_hub.add_repo("alice/not-an-adapter", {"config.json": b"{}"})
    publish(fake_hub, "carol/private-lora", private=True)

    report = pull(hf_container, base_model=TINY_BASE, limit=10)
    assert [o.repo for o in report.outcomes] == [f"alice/lora-{i}" for i in range(5)]
    assert all(o.status == "created" for o in report.outcomes)
    first = fake_hub.requests("GET", "/api/models?")[0]
    assert "filter=peft" in first and "filter=base_model%3Aadapter%3Atiny-llama" in first
    assert len(fake_hub.requests("GET", "/api/models?")) == 3

    assert [o.repo for o in pull(hf_container, author="bob").outcomes] == ["bob/other-base"]
    tagged = pull(hf_container, tags=["qa"], search="LORA-", limit=3)
    assert [(o.repo, o.status) for o in tagged.outcomes] == [
        ("alice/lora-0", "skipped"),
        ("alice/lora-1", "skipped"),
        ("alice/lora-2", "skipped"),
    ]
    assert pull(hf_container, author="nobody").outcomes == []


def test_name_collisions(fake_hub, hf_container, tmp_path):
    publish(fake_hub, "alice/taken")
    publish(fake_hub, "alice/free", seed=2)
    hf_container.registry.add_path(
        write_adapter_dir(tmp_path / "local", seed=7), AdapterMeta(name="alice--taken")
    )
    before_blobs = blob_files(hf_container)

    report = pull(hf_container, repos=["alice/taken", "alice/free"])
    taken, free = report.outcomes
    assert (taken.status, taken.error.code, taken.item) == ("failed", "name_taken", None)
    assert "--name" in taken.error.message and "source upload" in taken.error.message
    assert free.status == "created"
    assert [(n, v) for n, v, _ in all_versions(hf_container)] == [
        ("alice--free", 1),
        ("alice--taken", 1),
    ]
    assert len(blob_files(hf_container)) == len(before_blobs) + 1  # only alice/free's weights

    renamed = pull(hf_container, repos=["alice/taken"], name="taken-from-hub").outcomes[0]
    assert (renamed.status, renamed.item.name) == ("created", "taken-from-hub")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "nothing to pull"),
        ({"repos": ["a/b"], "author": "x"}, "not both"),
        ({"author": "x", "name": "n"}, "exactly one repository"),
        ({"repos": ["a/b", "a/c"], "name": "n"}, "exactly one repository"),
        ({"repos": ["no-namespace"]}, "OWNER/NAME"),
        ({"repos": ["a/b--c"]}, "'--'"),
        ({"repos": ["a/b@../x"]}, "invalid revision"),
        ({"repos": ["a/b"], "name": "a..b"}, "'..'"),
        ({"author": "x", "limit": 0}, "limit"),
    ],
)
def test_bad_pull_requests_are_refused_before_any_request(fake_hub, kwargs, fragment):
    with pytest.raises(BadInputError) as e:
        PullTargets.checked(**kwargs)
    assert fragment in e.value.message
    assert fake_hub.log == []


def test_repo_ids_and_derived_names():
    assert parse_repo_spec("alice/x.y_z-1@refs/pr/1") == ("alice/x.y_z-1", "refs/pr/1")
    assert parse_repo_spec("alice/x") == ("alice/x", None)
    assert derived_name("HuggingFaceTB/SmolLM2-lora") == "HuggingFaceTB--SmolLM2-lora"
    for bad in ("alice/x.git", "alice/.x", "/x", "a/b/c", "alice/x@", "alice/é"):
        with pytest.raises(BadInputError):
            parse_repo_spec(bad)


def test_local_base_model_path_falls_back_to_the_card(fake_hub, hf_container):
    card = "---\nbase_model: tiny-llama\n---\nA trained adapter.\n"
    files = adapter_files(4, card=card, base="/home/me/checkpoints/llama")
    fake_hub.add_repo("alice/local-base", files)
    item = pull(hf_container, repos=["alice/local-base"]).outcomes[0].item
    assert item.base_model == TINY_BASE and item.description == "A trained adapter."


def test_registered_base_model_checks_shapes_and_registers_nothing(fake_hub, hf_container):
    hf_container.registry.register_base_model(TINY_BASE, dict(TINY_CONFIG, hidden_size=32))
    publish(fake_hub, "alice/wrong-shapes")
    outcome = pull(hf_container, repos=["alice/wrong-shapes"]).outcomes[0]
    assert (outcome.status, outcome.error.code) == ("failed", "incompatible_base_model")
    assert all_versions(hf_container) == []


def _served(hub, name: str) -> int:
    return sum(n for path, n in hub.served if path == name)


def _big_adapter(**config) -> dict[str, bytes]:
    """Rank 128 on the tiny base's q/v: 230 kB, over the 100 kB a header read fetches."""
    return {
        "adapter_config.json": json.dumps(peft_config(r=128, **config)).encode(),
        "adapter_model.safetensors": serialize_safetensors(make_tensors(r=128, seed=3)),
    }


def test_a_misfit_for_a_registered_base_is_refused_from_the_weights_header(fake_hub, hf_container):
    """The config names a registered base whose shapes differ: the pull reads the weights'
    header (one ranged request), refuses with the same error as after a full download, and
    never downloads the weights."""
    hf_container.registry.register_base_model(TINY_BASE, dict(TINY_CONFIG, hidden_size=32))
    files = _big_adapter()
    size = len(files["adapter_model.safetensors"])
    fake_hub.add_repo("alice/big-misfit", files)
    outcome = pull(hf_container, repos=["alice/big-misfit"]).outcomes[0]
    assert (outcome.status, outcome.error.code) == ("failed", "incompatible_base_model")
    assert (
        "model.layers.0.self_attn.q_proj: adapter has (in=64, out=64), base model has (in=32"
        in (outcome.error.message)
    )
    assert 0 < _served(fake_hub, "adapter_model.safetensors") <= 100_001 < size
    assert all_versions(hf_container) == [] and blob_files(hf_container) == []


def test_a_fit_for_a_registered_base_is_checked_then_downloaded(fake_hub, hf_container):
    hf_container.registry.register_base_model(TINY_BASE, TINY_CONFIG)
    files = _big_adapter()
    size = len(files["adapter_model.safetensors"])
    fake_hub.add_repo("alice/big-fit", files)
    outcome = pull(hf_container, repos=["alice/big-fit"]).outcomes[0]
    assert outcome.status == "created" and outcome.item.rank == 128
    assert _served(fake_hub, "adapter_model.safetensors") == size + 100_001  # header, then file


def test_weights_whose_header_cannot_be_read_get_the_full_validators_error(fake_hub, hf_container):
    """The header read fails (not JSON): the pull goes on to the full download, whose strict
    reader names the defect, as it does when no base model is registered."""
    hf_container.registry.register_base_model(TINY_BASE, TINY_CONFIG)
    garbage = (12).to_bytes(8, "little") + b"not json!!!!"
    fake_hub.add_repo("alice/garbage", {**adapter_files(), "adapter_model.safetensors": garbage})
    outcome = pull(hf_container, repos=["alice/garbage"]).outcomes[0]
    assert (outcome.status, outcome.error.code) == ("failed", "safetensors_header_not_json")
    assert all_versions(hf_container) == []


def test_card_that_does_not_parse_is_ignored_with_a_warning(fake_hub, hf_container):
    files = adapter_files(5, card="---\n- just\n- a list\n---\nbody\n")
    fake_hub.add_repo("alice/odd-card", files)
    outcome = pull(hf_container, repos=["alice/odd-card"]).outcomes[0]
    assert outcome.status == "created" and outcome.item.description == ""
    assert any("card ignored" in w for w in outcome.warnings)
    meta = json.loads(fake_hub.files_at("alice/odd-card", outcome.revision)["adapter_config.json"])
    assert outcome.item.base_model == meta["base_model_name_or_path"]
