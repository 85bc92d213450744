"""Editing an adapter's card (`loradex edit`, `PATCH /adapters/{name}`): the catalog, the
search indexes that must follow it, the CLI and REST refusals."""

from __future__ import annotations

import pytest

from hub.core.errors import HubError
from hub.core.models import AdapterMeta
from hub.core.names import AdapterRef
from tests.api_helpers import api_client, assert_error, auth, make_container, new_token
from tests.cli_helpers import cli
from tests.factories import write_adapter_dir
from tests.search_helpers import names, search_home, service_home, top_names


@pytest.fixture
def container(tmp_path, catalog_url):
    """Two adapters on SQLite or PostgreSQL (``catalog_url`` runs both)."""
    c = make_container(tmp_path / "home", catalog_url, text_embedder="hash")
    for i, name in enumerate(("a", "b")):
        src = write_adapter_dir(tmp_path / name, seed=i)
        c.registry.add_path(src, AdapterMeta(name=name, description=f"adapter {name}", tags=["t"]))
    return c


def test_an_edit_changes_the_card_of_every_version_and_advances_the_revision(container, tmp_path):
    catalog, registry = container.catalog, container.registry
    registry.add_path(write_adapter_dir(tmp_path / "a2", seed=5), AdapterMeta(name="a"))
    before = catalog.versions_fingerprint()
    item, changed = registry.edit_card(
        "a", description="  Sort the words.  ", tags=["x", "w", "x"], license="mit"
    )
    assert changed and (item.name, item.version) == ("a", 2)  # the latest version
    assert (item.description, item.tags, item.license) == ("Sort the words.", ["w", "x"], "mit")
    first = registry.show(AdapterRef.parse("a@1"))
    assert (first.description, first.tags, first.license) == ("Sort the words.", ["w", "x"], "mit")
    after = catalog.versions_fingerprint()
    assert after[:4] == before[:4] and after[4] == before[4] + 1  # no version moved
    assert [(v.name, v.card_revision) for v in catalog.cards_edited_since(before[4])] == [
        ("a", after[4])
    ]
    assert catalog.cards_edited_since(after[4]) == []
    # The same card again writes nothing and leaves the revision alone.
    same, changed = registry.edit_card("a", description="Sort the words.", tags=["w", "x"])
    assert not changed and same.description == "Sort the words."
    assert catalog.versions_fingerprint() == after
    # Clearing: "" for description and license, [] for tags.
    cleared, _ = registry.edit_card("a", description="", tags=[], license="")
    assert (cleared.description, cleared.tags, cleared.license) == ("", [], None)
    assert registry.show(AdapterRef.parse("b")).description == "adapter b"  # untouched


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({}, "edit_nothing"),
        ({"description": "x" * 10_001}, "invalid_description"),
        ({"description": "a\x00b"}, "invalid_description"),
        ({"license": "l" * 129}, "invalid_license"),
        ({"tags": [""]}, "invalid_tags"),
        ({"tags": ["t" * 65]}, "invalid_tags"),
        ({"tags": [f"t{i}" for i in range(65)]}, "invalid_tags"),
    ],
)
def test_bad_edits_are_refused_and_change_nothing(container, kwargs, code):
    before = container.catalog.versions_fingerprint()
    with pytest.raises(HubError) as err:
        container.registry.edit_card("a", **kwargs)
    assert err.value.code == code
    assert container.registry.show(AdapterRef.parse("a")).description == "adapter a"
    assert container.catalog.versions_fingerprint() == before


def test_unknown_names_and_versions_are_refused(container):
    with pytest.raises(HubError) as err:
        container.registry.edit_card("nosuch", license="mit")
    assert err.value.code == "not_found"
    with pytest.raises(HubError) as err:
        container.registry.edit_card("a@1", license="mit")
    assert err.value.code == "card_is_per_adapter" and "pass a, not a@1" in err.value.message


def test_concurrent_edits_get_distinct_revisions(container):
    """Each edit advances the counter by one under concurrency (SQLite and PostgreSQL), so a
    search index that saw revision N cannot miss an edit that committed after it."""
    import threading

    n = 6
    barrier = threading.Barrier(2)

    def editor(name: str) -> None:
        barrier.wait()
        for i in range(n):
            container.registry.edit_card(name, description=f"{name} edit {i}")

    threads = [threading.Thread(target=editor, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert container.catalog.versions_fingerprint()[4] == 2 * n
    revisions = {v.name: v.card_revision for v in container.catalog.cards_edited_since(0)}
    assert set(revisions) == {"a", "b"} and len(set(revisions.values())) == 2
    assert max(revisions.values()) == 2 * n  # the last edit holds the last revision


# -- search follows the card --------------------------------------------------------------------
def test_a_running_search_service_re_embeds_only_the_edited_card(tmp_path):
    container = service_home(tmp_path)
    service = container.search
    assert top_names(service, "capital city of a country", k=1) == ["capitals"]
    embedded: list[str] = []
    real = service._embed_cards

    def recording(versions):
        embedded.extend(v.name for v in versions)
        return real(versions)

    service._embed_cards = recording
    container.registry.edit_card("french", description="Name the capital city of a country.")
    hits = service.search("capital city of a country", mode="text", k=2)  # no sync call needed
    assert hits[0].item.description == "Name the capital city of a country."
    assert hits[0].score == pytest.approx(hits[1].score)  # two cards now say the same thing
    assert embedded == ["french"]
    # Only the edited card is embedded again; a license (not part of the card) reuses it; the
    # weights are not looked at.
    container.registry.edit_card("reverse", description="Write the word backwards.")
    container.registry.edit_card("capitals", license="mit")
    report = service.sync()
    assert (report["text_added"], report["text_reused"]) == (1, 1)
    assert embedded == ["french", "reverse"]
    assert top_names(service, "write the word backwards", k=1) == ["reverse"]


def test_an_edit_by_another_process_is_seen_by_a_fresh_one(tmp_path, monkeypatch):
    """The saved index holds the old card's vector; a process started later must not serve it."""
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "hash")
    home = search_home(tmp_path)
    assert names(cli(home, "search", "planets of the solar system", "--k", "1", "--json")) != [
        "reverse"
    ]
    edit = cli(home, "edit", "reverse", "--description", "Name the planets of the solar system.")
    assert edit.code == 0 and "edited the card of reverse" in edit.stdout
    run = cli(home, "search", "planets of the solar system", "--k", "1", "--mode", "text", "--json")
    assert names(run) == ["reverse"]
    assert run.json()["data"][0]["description"] == "Name the planets of the solar system."
    # reindex keeps the edited vector (its key carries the card revision), not the first one
    assert cli(home, "reindex").code == 0
    again = cli(
        home, "search", "planets of the solar system", "--k", "1", "--mode", "text", "--json"
    )
    assert names(again) == ["reverse"]


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_edit_shapes_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "hash")
    home = search_home(tmp_path)
    doc = cli(home, "edit", "reverse", "--tag", "b", "--tag", "a", "--license", "mit", "--json")
    assert doc.code == 0
    assert doc.json()["changed"] is True and doc.json()["name"] == "reverse"
    assert (doc.json()["tags"], doc.json()["license"]) == (["a", "b"], "mit")
    assert (
        cli(home, "edit", "reverse", "--clear-tags", "--license", "", "--json").json()["tags"] == []
    )
    cases = [
        (["edit", "reverse"], "edit_nothing"),
        (["edit", "reverse@1", "--license", "x"], "card_is_per_adapter"),
        (["edit", "nosuch", "--license", "x"], "not_found"),
        (["edit", "reverse", "--tag", "a", "--clear-tags"], "bad_input"),
        (["edit", "reverse", "--tag", " "], "invalid_tags"),
    ]
    for args, code in cases:
        run = cli(home, *args)
        assert run.code == 2 and run.stderr.startswith(f"error [{code}]"), (args, run.stderr)
    assert (
        cli(home, "show", "reverse", "--json").json()["description"]
        == "Reverse the letters of a word."
    )


def test_adding_known_weights_with_another_card_says_it_was_not_applied(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADEX_TEXT_EMBEDDER", "hash")
    home = search_home(tmp_path)
    again = cli(
        home, "add", tmp_path / "reverse", "--name", "reverse", "--description", "New words."
    )
    assert again.code == 0 and "already registered as reverse@1" in again.stdout
    assert "description did not change" in again.stderr and "loradex edit reverse" in again.stderr
    same = cli(home, "add", tmp_path / "reverse", "--name", "reverse", "--tag", "letters")
    assert same.code == 0 and "did not change" not in same.stderr  # the card says this already
    assert (
        cli(home, "show", "reverse", "--json").json()["description"]
        == "Reverse the letters of a word."
    )


# -- REST ---------------------------------------------------------------------------------------
def test_patch_edits_the_card_as_a_merge_patch(container):
    token = new_token(container)
    with api_client(container) as client:
        assert_error(client.patch("/adapters/a", json={"license": "mit"}), 401)
        ok = client.patch(
            "/adapters/a", json={"description": "Sort it.", "license": "mit"}, headers=auth(token)
        )
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert (body["description"], body["tags"], body["license"], body["changed"]) == (
            "Sort it.", ["t"], "mit", True,
        )  # fmt: skip
        # null clears; a field left out stays
        cleared = client.patch(
            "/adapters/a", json={"license": None, "tags": []}, headers=auth(token)
        )
        assert (cleared.json()["license"], cleared.json()["tags"]) == (None, [])
        assert cleared.json()["description"] == "Sort it."
        same = client.patch("/adapters/a", json={"description": "Sort it."}, headers=auth(token))
        assert same.json()["changed"] is False
        assert client.get("/adapters/a").json()["description"] == "Sort it."
        hit = client.get("/search", params={"q": "Sort it.", "mode": "text", "k": 1}).json()
        assert hit["data"][0]["name"] == "a"
        empty = client.patch("/adapters/a", json={}, headers=auth(token))  # RFC 7396: a no-op
        assert empty.status_code == 200 and empty.json()["changed"] is False
        assert_error(client.patch("/adapters/nosuch", json={}, headers=auth(token)), 404)
        for body, status, code in [
            ({"descripton": "typo"}, 422, "invalid_request"),
            ({"tags": "t"}, 422, "invalid_request"),
            ({"description": "a\x00b"}, 422, "invalid_request"),
            ({"tags": ["t"] * 65}, 422, "invalid_request"),
        ]:
            assert_error(client.patch("/adapters/a", json=body, headers=auth(token)), status, code)
        assert_error(
            client.patch("/adapters/nosuch", json={"license": "x"}, headers=auth(token)), 404
        )
        assert client.get("/adapters/a").json()["description"] == "Sort it."
