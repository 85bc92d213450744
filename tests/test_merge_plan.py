"""``merging.plan`` and ``loradex merge --dry-run`` / ``POST /merges?dry_run=true``: every check
of a merge from shapes alone, and a prediction of the result that a real merge of the same
inputs must match for every registered method; nothing computed or written."""

from __future__ import annotations

import pytest

from hub.core.errors import HubError
from hub.core.lora import LoraAdapter
from merging import MERGE_CODES, list_methods, merge, plan
from merging.synthetic import random_adapter
from tests.api_helpers import (
    api_client,
    assert_error,
    auth,
    make_container,
    new_token,
    poll_job,
    seed_adapters,
    stored_state,
)
from tests.cli_helpers import cli
from tests.test_merge_refusals import BAD, seed_home, snapshot
from tests.test_merging_methods import SHAPES


def _ads(ranks, leaves=None) -> list[LoraAdapter]:
    return [
        random_adapter(SHAPES, layers=2, rank=r, seed=50 + i, leaves=(leaves or {}).get(i))
        for i, r in enumerate(ranks)
    ]


def _cases(spec):
    """(adapters, params) a method accepts: equal ranks, a target rank, a basis, unequal
    ranks, and both module policies over inputs that adapt different modules."""
    fields = spec.params.model_fields
    base = {"density": 0.5} if "density" in fields else {}  # the DARE/TIES family needs one
    partial = {1: sorted(SHAPES)[:2]}  # the second input adapts two of the module kinds
    cases = [(_ads([4, 4, 4]), {})]
    if "rank" in fields:
        cases.append((_ads([4, 4, 4]), {"rank": 6}))
    if "basis" in fields:
        cases.append((_ads([4, 4, 4]), {"basis": 1, "centre": False}))
    if not spec.equal_ranks:
        cases.append((_ads([4, 8, 2]), {}))
    cases += [(_ads([4, 4, 4], partial), {"modules": m}) for m in ("union", "intersection")]
    return [(ads, {**base, **params}) for ads, params in cases]


@pytest.mark.parametrize("spec", list_methods(), ids=lambda s: s.name)
def test_the_plan_is_what_the_merge_produces(spec):
    for ads, params in _cases(spec):
        weights = [0.5, 1.0, 0.25]
        layout = plan(ads, spec.name, params, weights)
        result = merge(ads, weights, spec.name, params, device="cpu")
        got = {name: m.rank for name, m in result.adapter}
        assert layout.module_ranks == got, (spec.name, params)
        assert layout.output_parameters == sum(m.num_parameters for _, m in result.adapter)
        assert layout.modules_skipped == result.report["modules_skipped"]
        assert layout.params == result.report["params"] and layout.dense == spec.dense
        held = sum(ad.modules[n].num_parameters for ad in ads for n in got if n in ad.modules)
        assert layout.input_parameters == held
        if spec.artifact_kind:
            assert layout.artifact_parameters == result.report["artifact_parameters"] > 0
            assert layout.input_parameters == result.report["member_parameters"]
        else:
            assert layout.artifact_parameters is None


def test_union_plan_names_the_inputs_each_partial_module_lacks():
    ads = _ads([4, 4], {1: ["q_proj"]})
    layout = plan(ads, "cat", {"modules": "union"}, labels=["x@1", "y@1"])
    lacking = {m: who for m, who in layout.modules_partial.items()}
    assert lacking and all(who == ["y@1"] for who in lacking.values())
    assert all(not m.endswith("q_proj") for m in lacking)
    narrow = plan(ads, "cat", {"modules": "intersection"})
    assert set(narrow.modules_skipped) == set(lacking) and not narrow.modules_partial
    assert narrow.input_parameters < layout.input_parameters


def test_the_plan_refuses_what_the_merge_refuses():
    a, b = _ads([4, 4])
    r8 = _ads([8])[0]
    q_only = _ads([4], {0: ["q_proj"]})[0]
    v_only = _ads([4], {0: ["v_proj"]})[0]
    cases = [
        (([a], "cat", {}, None), "merge_too_few_adapters"),
        (([a, b], "nope", {}, None), "unknown_method"),
        (([a, b], "svd", {"rank": 0}, None), "invalid_params"),
        (([a, b], "svd", {"rank": 9}, None), "target_rank_too_large"),
        (([a, b], "lego", {"rank": 9}, None), "target_rank_too_large"),
        (([a, b], "rmm", {"basis": 3}, None), "basis_too_large"),
        (([a, r8], "ties", {"density": 0.5}, None), "rank_mismatch"),
        (([a, b], "cat", {}, [1.0]), "weights_count_mismatch"),
        (([a, b], "cat", {}, [1.0, float("nan")]), "weights_not_finite"),
        (([a, b], "lego", {}, [1.0, -1.0]), "weights_negative"),
        (([q_only, v_only], "cat", {}, None), "target_modules_disjoint"),
        (([a, q_only], "cat", {}, None), "module_set_mismatch"),
    ]
    for (ads, method, params, weights), code in cases:
        with pytest.raises(HubError) as planned:
            plan(ads, method, params, weights)
        with pytest.raises(HubError) as merged:
            merge(ads, weights or [1.0] * len(ads), method, params)
        assert planned.value.code == merged.value.code == code, (method, params, code)
        assert code in MERGE_CODES and planned.value.message == merged.value.message


def test_cli_dry_run_predicts_the_merge_and_writes_nothing(home):
    before = snapshot(home)
    run = cli(home, "merge", "a", "b", "--method", "rmm", "--name", "ab", "--dry-run", "--json")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert snapshot(home) == before
    assert (doc["dry_run"], doc["name"], doc["new_adapter"]) == (True, "ab", True)
    assert (doc["inputs"], doc["device"], doc["seed"]) == (["a@1", "b@1"], "cpu", 0)
    assert doc["params"] == {"modules": "strict", "basis": None, "centre": True, "gauge": "svd"}
    merged = cli(home, "merge", "a", "b", "--method", "rmm", "--name", "ab", "--json").json()
    report = merged["report"]
    assert doc["module_ranks"] == report["per_module_ranks"] and doc["rank"] == merged["rank"]
    assert doc["artifact_parameters"] == report["artifact_parameters"]
    assert doc["input_parameters"] == report["member_parameters"]
    assert doc["output_bytes"] == 4 * doc["output_parameters"] == 4 * report["adapter_parameters"]

    again = cli(home, "merge", "a", "b", "--method", "svd", "--rank", "2", "--name", "ab",
                "--dry-run")  # fmt: skip
    assert again.code == 0, again.stderr
    assert "would merge a@1, b@1 by svd on cpu into a new version of ab" in again.stdout
    assert "output rank 2" in again.stdout and "nothing computed or written" in again.stdout
    wide = cli(home, "merge", "a", "q-only", "--method", "cat", "--modules", "union",
               "--name", "aq", "--dry-run")  # fmt: skip
    assert "merged from only some inputs: 2 modules" in wide.stdout, wide.stdout
    predicted = cli(home, "merge", "a", "q-only", "--method", "cat", "--modules", "union",
                    "--name", "aq", "--dry-run", "--json").json()  # fmt: skip
    done = cli(home, "merge", "a", "q-only", "--method", "cat", "--modules", "union",
               "--name", "aq", "--json").json()  # fmt: skip
    recorded = cli(home, "show", "aq", "--json").json()["lineage"]["recipe"]["report"]
    assert predicted["modules_partial"] == done["report"]["modules_partial"]
    assert recorded["modules_partial"] == predicted["modules_partial"]
    assert len(predicted["modules_partial"]) == 2  # the v_proj modules q-only lacks
    assert all(who == ["q-only@1"] for who in predicted["modules_partial"].values())
    dense = cli(home, "merge", "a", "b", "--method", "ties_svd", "--density", "0.5",
                "--name", "t", "--dry-run")  # fmt: skip
    assert "dense: a d_out x d_in matrix per input and module" in dense.stdout


def test_cli_dry_run_refuses_every_bad_merge_as_the_merge_does(home):
    before = snapshot(home)
    for refs, method, extra, fragment in BAD:
        run = cli(home, "merge", *refs, "--method", method, *extra, "--name", "bad", "--dry-run")
        assert run.code == 2, (refs, method, extra, run.stderr)
        assert fragment in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    for args, fragment in [
        ((["a", "b"], "--name", "bad name"), "invalid_name"),
        ((["a", "nope"], "--name", "x"), "not_found"),
        ((["a", "b"], "--name", "x", "--seed", "-1"), "seed_out_of_range"),
    ]:
        run = cli(home, "merge", *args[0], *args[1:], "--dry-run")
        assert run.code != 0 and fragment in run.stderr, (args, run.stderr)
    assert snapshot(home) == before


def test_rest_dry_run_answers_the_plan_and_queues_nothing(tmp_path):
    c = make_container(tmp_path / "h")
    token = new_token(c)
    with api_client(c) as client:
        seed_adapters(client, token, tmp_path, ["a", "b"])
        before = stored_state(client, tmp_path / "h")
        body = {"adapters": ["a", "b"], "method": "lego", "params": {"rank": 3}, "name": "ab"}
        res = client.post("/merges?dry_run=true", json=body, headers=auth(token))
        assert res.status_code == 200, res.text
        doc = res.json()
        assert (doc["dry_run"], doc["rank"], doc["inputs"]) == (True, 3, ["a@1", "b@1"])
        assert doc["device"] is None  # the worker that runs the job decides
        assert set(doc["module_ranks"].values()) == {3} and doc["new_adapter"] is True
        bad = client.post(
            "/merges?dry_run=true", json={**body, "params": {"rank": 99}}, headers=auth(token)
        )
        assert_error(bad, 400, "target_rank_too_large")
        assert_error(client.post("/merges?dry_run=true", json=body), 401)
        assert client.get("/jobs", headers=auth(token)).json()["count"] == 0
        assert stored_state(client, tmp_path / "h") == before
        queued = client.post("/merges", json=body, headers=auth(token))
        assert queued.status_code == 202  # the same body, without the flag, is a job
        merged = poll_job(client, queued.json()["job_id"])
        assert merged["state"] == "succeeded", merged


@pytest.fixture
def home(tmp_path, catalog_url, monkeypatch):
    monkeypatch.setenv("LORADEX_DATABASE_URL", catalog_url)
    return seed_home(tmp_path)


def test_openapi_describes_each_status_of_the_dry_run_routes(tmp_path):
    from api.app import create_app

    spec = create_app(make_container(tmp_path / "h"), run_jobs=False).openapi()

    def schema(path, status):
        return spec["paths"][path]["post"]["responses"][status]["content"]["application/json"][
            "schema"
        ]

    ref = "#/components/schemas/"
    assert schema("/merges", "202") == {"$ref": ref + "JobAccepted"}  # a job, never a plan
    assert schema("/merges", "200") == {"$ref": ref + "MergePlanResponse"}
    assert schema("/adapters", "201") == {"$ref": ref + "AdapterCreated"}
    assert [s["$ref"] for s in schema("/adapters", "200")["anyOf"]] == [
        ref + "AdapterCreated",  # the same weights again
        ref + "AdapterAddPlan",  # ?dry_run=true
    ]
