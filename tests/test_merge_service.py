"""`loradex merge` / `revert` / `methods`: results, lineage, recipe, PEFT reload, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from storage.peft_format import read_peft_dir
from tests.cli_helpers import cli
from tests.factories import make_tensors, peft_config, write_adapter_dir


def state(home):
    listing = cli(home, "ls", "--all-versions", "--json").json()["data"]
    blobs = sorted(p.name for p in (home / "blobs" / "sha256").rglob("*") if p.is_file())
    return listing, blobs


def deltas(path):
    adapter = read_peft_dir(path).adapter
    return {n: m.delta() for n, m in adapter.modules.items()}


@pytest.fixture
def home(tmp_path, catalog_url, monkeypatch):
    monkeypatch.setenv("LORADEX_DATABASE_URL", catalog_url)
    h = tmp_path / "home"
    for i, name in enumerate(["a", "b", "c"]):
        src = write_adapter_dir(tmp_path / f"src-{name}", seed=10 + i)
        assert cli(h, "add", src, "--name", name).code == 0
    return h


def test_methods_lists_every_method_with_params(tmp_path):
    doc = cli(tmp_path / "h", "methods", "--json").json()
    names = {m["name"] for m in doc["data"]}
    assert {
        "linear",
        "cat",
        "svd",
        "ties",
        "dare_linear",
        "dare_ties",
        "magnitude_prune",
        "lego",
        "rmm",
    } <= names
    svd = next(m for m in doc["data"] if m["name"] == "svd")
    assert "rank" in {p["name"] for p in svd["params"]}
    text = cli(tmp_path / "h", "methods").stdout  # people see the paper too
    lego = next(m for m in doc["data"] if m["name"] == "lego")
    assert lego["reference"] in text and "arXiv:2409.16167" in text


def test_cat_merge_registers_lineage_recipe_and_exact_delta(home, tmp_path):
    run = cli(
        home, "merge", "a", "b@1", "--method", "cat", "--weights", "0.5,2", "--name", "ab", "--json"
    )
    assert run.code == 0, run.stderr
    item = run.json()
    assert (item["name"], item["version"], item["source"], item["rank"]) == ("ab", 1, "merge", 8)
    detail = cli(home, "show", "ab", "--json").json()
    parents = [
        (p["name"], p["version"], p["relation"], p["weight"]) for p in detail["lineage"]["parents"]
    ]
    assert parents == [("a", 1, "merge", 0.5), ("b", 1, "merge", 2.0)]
    recipe = detail["lineage"]["recipe"]
    assert recipe["method"] == "cat" and recipe["weights"] == [0.5, 2.0] and recipe["seed"] == 0
    assert [i["name"] for i in recipe["inputs"]] == ["a", "b"]
    assert "torch" in recipe["software"] and "seconds" in recipe["report"]

    for ref in ("a", "b", "ab"):
        assert cli(home, "export", ref, tmp_path / f"x-{ref}").code == 0
    da, db, dab = (deltas(tmp_path / f"x-{r}") for r in ("a", "b", "ab"))
    for module, got in dab.items():
        np.testing.assert_allclose(got, 0.5 * da[module] + 2.0 * db[module], atol=1e-5)

    # The same merge again: the same bytes, so the same version, and the CLI says so.
    again = cli(home, "merge", "a", "b@1", "--method", "cat", "--weights", "0.5,2", "--name", "ab")
    assert again.code == 0
    assert again.stdout.startswith("merged into ab@1, already registered with these weights (")
    assert cli(home, "show", "ab", "--json").json()["version"] == 1


def test_svd_merge_has_the_requested_rank(home):
    run = cli(
        home, "merge", "a", "b", "c", "--method", "svd", "--rank", "2", "--name", "s", "--json"
    )
    assert run.code == 0, run.stderr
    detail = cli(home, "show", "s", "--json").json()
    assert {m["rank"] for m in detail["modules"]} == {2}


def test_rmm_merge_then_revert_rebuilds_the_member(home, tmp_path):
    run = cli(home, "merge", "a", "b", "c", "--method", "rmm", "--name", "r", "--json")
    assert run.code == 0, run.stderr
    assert cli(home, "show", "r", "--json").json()["artifact_digest"]
    back = cli(home, "revert", "r", "--member", "b", "--json")
    assert back.code == 0, back.stderr
    item = back.json()
    assert item["name"] == "b.reverted" and item["source"] == "reverted"
    parents = cli(home, "show", "b.reverted", "--json").json()["lineage"]["parents"]
    assert [(p["name"], p["relation"]) for p in parents] == [("r", "revert")]
    cli(home, "export", "b", tmp_path / "orig")
    cli(home, "export", "b.reverted", tmp_path / "rev")
    orig, rev = deltas(tmp_path / "orig"), deltas(tmp_path / "rev")
    for module in orig:
        np.testing.assert_allclose(rev[module], orig[module], atol=1e-4)
    # the artifact blob is referenced: gc keeps it, and removing the merge frees it
    assert cli(home, "gc", "--grace", "0", "--json").json()["removed_blobs"] == []

    # A deleted member is still a member: the merge names it as deleted, and rebuilds it
    assert cli(home, "rm", "b").code == 0
    shown = cli(home, "show", "r")
    assert "b@1 (merge, weight 1.0, deleted)" in shown.stdout
    assert "a@1 (merge, weight 1.0)" in shown.stdout
    parents = cli(home, "show", "r", "--json").json()["lineage"]["parents"]
    assert [(p["name"], p["deleted"]) for p in parents] == [("a", False), ("b", True), ("c", False)]
    back = cli(home, "revert", "r", "--member", "b", "--name", "b.again", "--json")
    assert back.code == 0, back.stderr
    twice = cli(home, "revert", "r", "--member", "b", "--name", "b.again")
    assert twice.stdout == "reverted b as b.again@1, already registered with these weights\n"
    cli(home, "export", "b.again", tmp_path / "again")
    again = deltas(tmp_path / "again")
    for module in orig:
        np.testing.assert_allclose(again[module], orig[module], atol=1e-4)


def test_bad_merges_exit_2_and_register_nothing(home, tmp_path):
    other = write_adapter_dir(tmp_path / "other", seed=50, config=peft_config(base="another-model"))
    assert cli(home, "add", other, "--name", "other").code == 0
    dora_cfg = peft_config(use_dora=True)
    t = make_tensors(seed=51)
    for i in range(2):
        for proj, width in (("q_proj", 64), ("v_proj", 32)):
            key = f"base_model.model.model.layers.{i}.self_attn.{proj}.lora_magnitude_vector"
            t[key] = np.ones(width, dtype=np.float32)
    dora = write_adapter_dir(tmp_path / "dora", tensors=t, config=dora_cfg)
    assert cli(home, "add", dora, "--name", "dora").code == 0
    before = state(home)
    cases = [
        (["a", "other", "--method", "cat"], "base"),
        (["a", "dora", "--method", "cat"], "DoRA"),
        (["a", "--method", "cat"], "at least"),
        (["a", "b", "--method", "nope"], "known"),
        (["a", "b", "--method", "cat", "--weights", "nan,1"], "finite"),
        (["a", "b", "--method", "cat", "--weights", "1,2,3"], "weights"),
        (["a", "b", "--method", "svd", "--rank", "0"], "rank"),
        (["a", "b", "--method", "svd", "--rank", "100"], "rank"),
        (["a", "b", "--method", "lego", "--weights", "-1,1"], "negative"),
        (["a", "b", "--method", "ties"], "density"),
        (["a", "missing", "--method", "cat"], "missing"),
    ]
    for args, fragment in cases:
        run = cli(home, "merge", *args, "--name", "bad")
        assert run.code == 2, (args, run.stderr)
        assert fragment.lower() in run.stderr.lower(), (args, run.stderr)
        assert "Traceback" not in run.stderr
    assert cli(home, "merge", "a", "b", "--method", "cat", "--name", "cat-ab").code == 0
    for args, fragment in [
        (["cat-ab", "--member", "a"], "reversible"),
        (["a", "--member", "a"], "reversible"),
    ]:
        run = cli(home, "revert", *args)
        assert run.code == 2 and fragment in run.stderr, run.stderr
    assert cli(home, "merge", "a", "b", "--method", "rmm", "--name", "rab").code == 0
    run = cli(home, "revert", "rab", "--member", "c")
    assert run.code == 2 and "not a member" in run.stderr
    after, _ = state(home)
    assert sorted(i["name"] for i in after) == sorted(
        [i["name"] for i in before[0]] + ["cat-ab", "rab"]
    )


def test_merge_shows_progress_on_a_terminal(home, monkeypatch):
    """The bar is drawn on stderr only when it is a terminal; the modules done / total reach it."""
    import io

    from rich.console import Console

    import hub.cli.merge_commands as merge_commands

    screen = io.StringIO()
    monkeypatch.setattr(merge_commands, "err", Console(file=screen, force_terminal=True, width=80))
    run = cli(home, "merge", "a", "b", "c", "--method", "svd", "--name", "shown")
    assert run.code == 0, run.stderr
    drawn = screen.getvalue()
    assert "merging" in drawn and "100%" in drawn, drawn


def test_an_input_with_no_recorded_base_neither_drops_nor_hides_the_others_base(home, tmp_path):
    """An adapter registered without a base model is fitted by shape only: put first, it used
    to make the result base-less and skip the base check between the inputs after it."""
    bare = write_adapter_dir(tmp_path / "bare", seed=60, config=peft_config(base=None))
    other = write_adapter_dir(tmp_path / "other", seed=61, config=peft_config(base="another"))
    assert cli(home, "add", bare, "--name", "bare").code == 0
    assert cli(home, "add", other, "--name", "other").code == 0
    assert cli(home, "show", "bare", "--json").json()["base_model"] is None
    base_of_a = cli(home, "show", "a", "--json").json()["base_model"]
    assert base_of_a
    before = state(home)
    run = cli(home, "merge", "bare", "a", "other", "--method", "cat", "--name", "x")
    assert run.code == 2 and "[base_model_mismatch]" in run.stderr, run.stderr
    assert "another" in run.stderr and state(home) == before
    run = cli(home, "merge", "bare", "a", "--method", "cat", "--name", "bare-a", "--json")
    assert run.code == 0, run.stderr
    merged = cli(home, "show", "bare-a", "--json").json()
    assert merged["base_model"] == base_of_a
    assert merged["lineage"]["recipe"]["base_unrecorded"] == ["bare@1"]
    run = cli(home, "merge", "a", "b", "--method", "cat", "--name", "ab", "--json")
    assert run.code == 0, run.stderr
    assert "base_unrecorded" not in cli(home, "show", "ab", "--json").json()["lineage"]["recipe"]
