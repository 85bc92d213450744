"""``loradex add --dry-run`` and ``POST /adapters?dry_run=true``: the checks of an add (files,
shapes against a registered base, the card, same weights already here) and what it would do,
with nothing written; a real add afterwards does what the check said."""

from __future__ import annotations

import hashlib

import numpy as np

from hub.core.models import AdapterMeta
from tests.api_helpers import api_client, auth, make_container, new_token, stored_state, upload
from tests.api_helpers import upload_files as files_of
from tests.cli_helpers import cli
from tests.factories import TINY_BASE, TINY_CONFIG, make_tensors, write_adapter_dir


def digest(src) -> str:
    return hashlib.sha256((src / "adapter_model.safetensors").read_bytes()).hexdigest()


def blobs(home) -> list[str]:
    return sorted(p.name for p in (home / "blobs").rglob("*") if p.is_file())


def test_cli_dry_run_says_what_add_would_do_and_writes_nothing(tmp_path):
    home = tmp_path / "home"
    src = write_adapter_dir(tmp_path / "qa", seed=1)
    plan = cli(home, "add", src, "--description", "Answers.", "--dry-run", "--json")
    assert plan.code == 0, plan.stderr
    doc = plan.json()
    assert doc == {
        "dry_run": True,
        "name": "qa",
        "created": True,
        "new_adapter": True,
        "existing": None,
        "digest": digest(src),
        "size_bytes": (src / "adapter_model.safetensors").stat().st_size,
        "base_model": TINY_BASE,
        "architecture": doc["architecture"],
        "target_modules": ["q_proj", "v_proj"],
        "rank": 4,
        "dtype": "F32",
        "mergeable": True,
        "not_mergeable_reason": None,
        "warnings": [f"base model {TINY_BASE!r} is not registered; shapes were not checked"],
    }
    assert cli(home, "ls", "--json").json()["count"] == 0 and blobs(home) == []

    added = cli(home, "add", src, "--description", "Answers.", "--json").json()
    assert (added["created"], added["digest"]) == (True, doc["digest"])  # as planned

    again = cli(home, "add", src, "--description", "Other words.", "--dry-run")
    assert again.code == 0
    assert (
        f"would change nothing: already registered as qa@1 ({doc['digest'][:12]})" in again.stdout
    )
    assert "its description did not change" in again.stderr  # the card warning add gives

    other = write_adapter_dir(tmp_path / "qa2", seed=2)
    text = cli(home, "add", other, "--name", "qa", "--dry-run").stdout
    assert text.startswith(f"would register a new version of qa ({digest(other)[:12]}")
    items = cli(home, "ls", "--all-versions", "--json").json()["data"]
    assert [(i["name"], i["version"]) for i in items] == [("qa", 1)]
    assert cli(home, "show", "qa", "--json").json()["description"] == "Answers."


def test_cli_dry_run_refuses_what_add_refuses(tmp_path):
    home = tmp_path / "home"
    container = make_container(home)
    container.registry.register_base_model(TINY_BASE, dict(TINY_CONFIG, hidden_size=32))
    container.catalog.close()
    misfit = write_adapter_dir(tmp_path / "misfit", seed=1)
    tensors = make_tensors(seed=3)
    next(iter(tensors.values()))[0, 0] = np.nan
    nan = write_adapter_dir(tmp_path / "nan", tensors=tensors)
    for src, code in ((misfit, "incompatible_base_model"), (nan, "weights_not_finite")):
        checked = cli(home, "add", src, "--dry-run")
        real = cli(home, "add", src)
        assert checked.code == real.code == 2, (checked.stderr, real.stderr)
        assert f"[{code}]" in checked.stderr and f"[{code}]" in real.stderr
    assert cli(home, "ls", "--json").json()["count"] == 0 and blobs(home) == []


def test_rest_dry_run_upload_checks_and_stores_nothing(tmp_path):
    home = tmp_path / "home"
    container = make_container(home)
    token = new_token(container)
    src = write_adapter_dir(tmp_path / "a", seed=1)
    try:
        with api_client(container) as client:
            before = stored_state(client, home)
            r = client.post(
                "/adapters",
                params={"dry_run": "true"},
                headers=auth(token),
                data={"name": "alpha", "tags": "x"},
                files=files_of(src),
            )
            assert r.status_code == 200, r.text
            plan = r.json()
            assert (plan["dry_run"], plan["created"], plan["new_adapter"]) == (True, True, True)
            assert (plan["name"], plan["digest"], plan["rank"]) == ("alpha", digest(src), 4)
            assert stored_state(client, home) == before

            assert upload(client, token, "alpha", src).status_code == 201
            r = client.post(
                "/adapters?dry_run=true",
                headers=auth(token),
                data={"name": "alpha"},
                files=files_of(src),
            )
            assert (r.status_code, r.json()["created"], r.json()["existing"]) == (
                200,
                False,
                "alpha@1",
            )
            anonymous = client.post(
                "/adapters?dry_run=true", data={"name": "beta"}, files=files_of(src)
            )
            assert anonymous.status_code == 401  # the same auth as an upload
            bad = client.post(
                "/adapters?dry_run=maybe",
                headers=auth(token),
                data={"name": "b"},
                files=files_of(src),
            )
            assert bad.status_code == 422
            assert client.get("/adapters").json()["count"] == 1
    finally:
        container.catalog.close()


def test_plan_add_matches_add(tmp_path):
    """The plan's digest, rank and name are what ``add`` then registers."""
    container = make_container(tmp_path / "home")
    try:
        src = write_adapter_dir(tmp_path / "x", seed=4, r=8)
        meta = AdapterMeta(name="x", description="X.")
        plan = container.registry.plan_add_path(src, meta)
        added = container.registry.add_path(src, meta)
        assert (plan.created, plan.version.digest) == (added.created, added.item.digest)
        assert plan.to_dict()["rank"] == added.item.rank == 8
    finally:
        container.catalog.close()
