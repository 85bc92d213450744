"""``sync push``: PEFT files byte-identical to the catalog's, a model card whose YAML the Hub
understands (base_model, library_name, base_model_relation, tags, license) with lineage and
recipe in the body, private repos, auth failures, and a push -> pull round trip."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from huggingface_hub import ModelCard

from hub.core.errors import BadInputError, HfAuthError, NotFoundError
from hub.core.models import AdapterMeta
from hub.core.names import AdapterRef
from hub.services.sync import PullTargets
from storage.hf_card import MAX_CARD_BYTES, CardFacts, parse_card, relation_for
from tests.factories import TINY_BASE, write_adapter_dir
from tests.hf_fake_hub import front_matter
from tests.hf_fixtures import all_versions, hub_container


@pytest.fixture
def qa(hf_container, tmp_path):
    src = write_adapter_dir(tmp_path / "qa-src", seed=11)
    meta = AdapterMeta(
        name="qa", description="Answers trivia questions.", tags=["qa", "trivia"], license="mit"
    )
    hf_container.registry.add_path(src, meta)
    return src


def test_push_writes_identical_files_and_a_hub_card(fake_hub, hf_container, qa):
    report = hf_container.sync.push(AdapterRef("qa"), "alice/qa-lora")

    assert report.to_dict() == {
        "adapter": "qa@1",
        "repo": "alice/qa-lora",
        "revision": fake_hub.refs("alice/qa-lora")["main"],
        "source": f"hf://alice/qa-lora@{report.revision}",
        "url": f"{fake_hub.url}/alice/qa-lora/commit/{report.revision}",
        "files": ["README.md", "adapter_config.json", "adapter_model.safetensors"],
        "private": False,
    }
    files = fake_hub.files_at("alice/qa-lora", report.revision)
    assert files["adapter_model.safetensors"] == (qa / "adapter_model.safetensors").read_bytes()
    ref = AdapterRef("qa", 1)
    assert files["adapter_config.json"] == hf_container.registry.file_bytes(
        ref, "adapter_config.json"
    )
    assert fake_hub.meta("alice/qa-lora")["history"][-1]["message"] == "Upload qa@1 from loradex"

    card_text = files["README.md"].decode()
    data = front_matter(card_text)  # plain yaml.safe_load, independent of huggingface_hub
    detail = hf_container.registry.show(ref)
    assert data["base_model"] == TINY_BASE
    assert data["library_name"] == "peft"
    assert data["base_model_relation"] == "adapter"
    assert data["tags"] == ["loradex", "lora", "qa", "trivia"]
    assert data["license"] == "mit"
    assert data["pipeline_tag"] == "text-generation"
    assert data["loradex"] == {
        "name": "qa",
        "version": 1,
        "source": "upload",
        "digest": detail.digest,
        "rank": 4,
        "target_modules": detail.target_modules,
        "parents": [],
    }
    card = ModelCard(card_text)
    assert card.text.lstrip().startswith("# qa\n\nAnswers trivia questions.")
    assert detail.digest in card.text and "## Lineage" not in card.text
    assert 'PeftModel.from_pretrained(base, "alice/qa-lora")' in card.text
    # The Hub's tag derivation sees it as an adapter of the base model.
    assert "base_model:adapter:tiny-llama" in fake_hub.tags_of("alice/qa-lora", report.revision)


def test_pushed_merge_has_merge_relation_lineage_and_recipe(fake_hub, hf_container, tmp_path):
    for i, name in enumerate(["left", "right"]):
        src = write_adapter_dir(tmp_path / name, seed=20 + i)
        hf_container.registry.add_path(src, AdapterMeta(name=name))
    merged = hf_container.merges.merge(
        [AdapterRef("left"), AdapterRef("right")],
        method="linear",
        name="both",
        weights=[0.6, 0.4],
        device="cpu",
    ).added.item

    report = hf_container.sync.push(AdapterRef(merged.name), "alice/both")
    text = fake_hub.files_at("alice/both", report.revision)["README.md"].decode()
    data = front_matter(text)
    assert data["base_model_relation"] == "merge" and data["base_model"] == TINY_BASE
    assert data["loradex"]["parents"] == ["left@1", "right@1"]
    assert "| `left@1` | merge | 0.6 | `upload` |" in text
    assert "| `right@1` | merge | 0.4 | `upload` |" in text
    recipe = json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))
    assert recipe == json.loads(
        json.dumps(hf_container.registry.show(AdapterRef("both")).lineage.recipe)
    )
    assert recipe["method"] == "linear" and recipe["weights"] == [0.6, 0.4]

    # A deleted parent reads "deleted", even after its name is registered again: the card must
    # not credit the newcomer (whose left@1 is another file).
    hf_container.registry.rm(AdapterRef("left"))
    newcomer = write_adapter_dir(tmp_path / "newcomer", seed=30)
    hf_container.registry.add_path(newcomer, AdapterMeta(name="left"))
    report = hf_container.sync.push(AdapterRef(merged.name), "alice/both")
    text = fake_hub.files_at("alice/both", report.revision)["README.md"].decode()
    assert "| `left@1` | merge | 0.6 | `deleted` |" in text


def test_push_then_pull_round_trips(fake_hub, hf_container, qa, tmp_path):
    pushed = hf_container.sync.push(AdapterRef("qa"), "alice/qa-lora", private=True)
    original = hf_container.catalog.get_item("qa")

    other = hub_container(tmp_path / "other-home", fake_hub, "tok-alice")
    [outcome] = other.sync.pull(PullTargets.checked(repos=["alice/qa-lora"])).outcomes
    item = outcome.item
    assert outcome.status == "created" and outcome.revision == pushed.revision
    assert item.source == pushed.to_dict()["source"]
    assert (item.digest, item.base_model, item.description, item.tags, item.license) == (
        original.digest,
        original.base_model,
        "Answers trivia questions.",
        ["qa", "trivia"],
        "mit",
    )
    assert (
        other.registry.load(AdapterRef(item.name)).weights_bytes
        == (qa / "adapter_model.safetensors").read_bytes()
    )
    other.catalog.close()

    # Private: an anonymous client cannot see it at all.
    anonymous = hub_container(tmp_path / "anon-home", fake_hub, None)
    [hidden] = anonymous.sync.pull(PullTargets.checked(repos=["alice/qa-lora"])).outcomes
    assert hidden.error.code == "hf_repo_not_found"
    anonymous.catalog.close()


def test_push_failures_are_clear_and_change_nothing(fake_hub, hf_container, qa, tmp_path):
    anonymous = hub_container(tmp_path / "anon", fake_hub, None)
    anonymous.registry.add_path(qa, AdapterMeta(name="qa"))
    with pytest.raises(HfAuthError) as no_token:
        anonymous.sync.push(AdapterRef("qa"), "alice/qa-lora")
    assert no_token.value.code == "hf_unauthorized"
    anonymous.catalog.close()

    with pytest.raises(HfAuthError) as foreign:
        hf_container.sync.push(AdapterRef("qa"), "bob/qa-lora")
    assert foreign.value.code == "hf_forbidden" and "HTTP 403" in foreign.value.message
    assert not fake_hub.exists("alice/qa-lora") and not fake_hub.exists("bob/qa-lora")

    requests = len(fake_hub.log)
    with pytest.raises(NotFoundError) as missing:
        hf_container.sync.push(AdapterRef("nope"), "alice/nope")
    assert missing.value.code == "not_found"
    with pytest.raises(BadInputError) as bad_repo:
        hf_container.sync.push(AdapterRef("qa"), "alice/../etc")
    assert bad_repo.value.code == "invalid_repo_id"
    assert len(fake_hub.log) == requests  # refused before any request
    assert [n for n, _, _ in all_versions(hf_container)] == ["qa"]


def test_card_yaml_is_valid_for_the_hub(fake_hub, hf_container, qa):
    hf_container.sync.push(AdapterRef("qa"), "alice/qa-lora")
    validations = fake_hub.requests("POST", "/api/validate-yaml")
    assert len(validations) == 1  # huggingface_hub validates README metadata before committing
    text = fake_hub.files_at("alice/qa-lora", fake_hub.refs("alice/qa-lora")["main"])["README.md"]
    assert isinstance(yaml.safe_load(text.decode().split("---")[1]), dict)


def test_parse_card_takes_only_what_the_catalog_can_hold():
    text = (
        "---\nlicense: other\nlicense_name: my-license\nbase_model: [org/base, org/other]\n"
        f"tags: [lora, loradex, qa, 7, true, 'base_model:adapter:x', '{'t' * 65}']\n---\n"
        "# Title\n\n<!-- comment -->\n\n- **Developed by:** [More Information Needed]\n\n"
        "Does\x00 things\n  well.\n\nSecond paragraph.\n"
    )
    facts = parse_card(text)
    assert facts == CardFacts(
        description="Does things well.",
        tags=["7", "qa"],
        license="my-license",
        base_model="org/base",
    )
    assert parse_card("just a body, no front matter").description == "just a body, no front matter"
    assert parse_card(None) == CardFacts()
    assert "over" in (parse_card("x" * (MAX_CARD_BYTES + 1)).problem or "")
    assert relation_for("merge") == "merge" and relation_for("hf://a/b@c") == "adapter"
