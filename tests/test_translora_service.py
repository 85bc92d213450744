"""Trans-LoRA as a use case, on two tiny base models: registration with lineage and recipe,
evaluation on the target, bad input refused with nothing registered, the job kind (progress,
cancel midway), ``POST /transfers`` and the ``loradex transfer`` command."""

from __future__ import annotations

import threading

import pytest

from generation.translora.params import TransferParams
from hub.core.errors import BadInputError, HubError, NotFoundError, UnknownNameError
from hub.core.names import AdapterRef
from hub.services.jobs import JobService
from tests.api_helpers import api_client, assert_error, auth, make_container, poll_job
from tests.cli_helpers import cli
from tests.translora_fixtures import (  # noqa: F401 - the fixture is used by name
    register_source,
    tiny_models_fixture,
    write_task,
)

TINY = TransferParams(
    seeds=3, synthetic=6, header_count=6, gen_batch=1, max_rounds=12, disc_real=16,
    disc_steps=8, disc_batch=8, disc_lr=1e-2, steps=4, batch=4, lr=1e-2, warmup=1,
)  # fmt: skip
SPEC = {"adapter": "src", "to": "tiny-target", "name": "moved", "generator": "tiny-llama",
        **TINY.model_dump(mode="json")}  # fmt: skip


@pytest.fixture
def container(tmp_path, sqlite_url):
    """SQLite only: publishing goes through ``RegistryService.add_parsed``, which the registry
    and merge tests already run on PostgreSQL; these runs train models, so run them once."""
    c = make_container(tmp_path / "home", sqlite_url)
    yield c
    c.catalog.close()


@pytest.fixture
def source(container, tiny_models, tmp_path):
    return register_source(container, tiny_models["tiny-llama"], write_task(tmp_path / "t.json"))


def listing(container):
    return [(i.name, i.version) for i in container.registry.ls(limit=1000)[0]]


def test_transfer_registers_the_student_with_lineage_and_recipe(container, source, tiny_models):
    messages: list[tuple[float, str]] = []
    added = container.transfers.transfer(
        AdapterRef("src"), to="tiny-target", name="moved", generator="tiny-llama", params=TINY,
        device="cpu", progress=lambda f, m: messages.append((f, m)),
    )  # fmt: skip
    item = added.item
    assert (item.name, item.source, item.base_model) == ("moved", "transferred", "test/tiny-target")
    assert item.base_model_fingerprint == "1" * 64 and "transferred" in item.tags
    assert item.metadata["transferred_from"] == "src@1" and item.metadata["synthetic_kept"] == 6
    detail = container.registry.show(AdapterRef("moved"))
    assert [(p.name, p.version, p.relation) for p in detail.lineage.parents] == [
        ("src", 1, "transferred")
    ]
    recipe = detail.lineage.recipe
    assert recipe["method"] == "trans-lora" and recipe["params"]["synthetic"] == 6
    assert recipe["source"]["digest"] == source.digest
    assert recipe["target"]["base_model_name"] == "tiny-target"
    assert len(recipe["seeds"]) == 3 and {"input", "output"} <= recipe["seeds"][0].keys()
    synth = recipe["synthesis"]
    assert synth["kept"] == 6 and synth["stopped"] == "target"
    assert synth["judged"] == synth["accepted"] + synth["rejected"] >= 6
    assert synth["prompt_example"].startswith("Here are 6 examples:\n1. ")
    disc = recipe["discriminator"]
    assert disc["used"] and disc["real_inputs"] == 16 and disc["synthetic_inputs"] == 16
    assert disc["real_source"].startswith("train split")
    assert recipe["teacher"]["labelled"] == 6 and recipe["student"]["steps"] == 4
    teacher = recipe["teacher"]  # the confidence filter (default), calibrated on real data
    assert teacher["filter"] == "confidence" and teacher["calibration_inputs"] >= 2
    assert teacher["max_nll"] >= max(0.05, teacher["margin"] * teacher["real_nll_median"]) - 1e-4
    assert synth["accepted"] >= synth["kept"] + synth["unconfident"]  # it sees accepted ones
    assert recipe["student"]["base_model"] == "tiny-target"
    assert {m.name.rsplit(".", 1)[-1] for m in detail.modules} == {"q_proj", "v_proj"}
    assert all(m.in_features == 48 for m in detail.modules if m.name.endswith("q_proj"))
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] > 0.95
    assert any(m.startswith("training discriminator") for _, m in messages)
    # The evaluator runs it on the target with the target's own ids (pad 0, stop 1, BOS).
    outcome = container.models.evaluate(AdapterRef("moved"), detail.metadata["task_ref"])
    assert outcome.n == 12 and 0.0 <= outcome.accuracy <= 1.0


def test_unfiltered_transfer_records_that_no_discriminator_was_used(container, source):
    params = TINY.model_copy(update={"filter": "none", "teacher_filter": "none"})
    container.transfers.transfer(
        AdapterRef("src"), to="tiny-target", name="raw", generator="tiny-llama", params=params,
        device="cpu",
    )  # fmt: skip
    recipe = container.registry.show(AdapterRef("raw")).lineage.recipe
    assert recipe["discriminator"] == {"used": False}
    assert recipe["teacher"]["filter"] == "none" and recipe["synthesis"]["unconfident"] == 0
    assert recipe["synthesis"]["judged"] == 0 and recipe["synthesis"]["kept"] == 6


@pytest.mark.parametrize(
    ("change", "error", "code"),
    [
        ({"to": "gpt-17"}, UnknownNameError, "unknown_name"),
        ({"to": "tiny-llama"}, BadInputError, "same_base_model"),
        ({"generator": "nope"}, UnknownNameError, "unknown_name"),
        ({"task_ref": "no_such_task"}, BadInputError, None),
        ({"ref": AdapterRef("missing")}, NotFoundError, "not_found"),
        ({"name": "../x"}, BadInputError, "invalid_name"),
    ],
)
def test_bad_input_is_refused_and_registers_nothing(container, source, change, error, code):
    before = listing(container)
    args = {"ref": AdapterRef("src"), "to": "tiny-target", "name": "moved",
            "generator": "tiny-llama", "params": TINY, "device": "cpu"} | change  # fmt: skip
    ref = args.pop("ref")
    with pytest.raises(error) as info:
        container.transfers.transfer(ref, **args)
    assert code is None or info.value.code == code
    assert listing(container) == before


def test_adapter_without_a_task_or_with_too_few_seeds(container, tiny_models, tmp_path):
    from generation.tasks import Task

    register_source(container, tiny_models["tiny-llama"], None, name="bare")
    one = Task(name="one", descriptions=["d"], train=[{"input": "a", "output": "b"}] * 4)
    register_source(container, tiny_models["tiny-llama"], write_task(tmp_path / "1.json", one),
                    name="thin")  # fmt: skip
    before = listing(container)
    for name, code in (("bare", "no_task"), ("thin", "too_few_seeds")):
        with pytest.raises(BadInputError) as info:
            container.transfers.plan(AdapterRef(name), to="tiny-target", generator="tiny-llama")
        assert info.value.code == code, info.value.message
    assert listing(container) == before


def test_a_generator_with_no_usable_samples_registers_nothing(container, source, monkeypatch):
    from generation.translora import synthesis

    # What the real round returns when the model writes no list items.
    monkeypatch.setattr(synthesis.ListSampler, "round", lambda self, i: [])
    before = listing(container)
    with pytest.raises(BadInputError) as info:
        container.transfers.transfer(
            AdapterRef("src"), to="tiny-target", name="moved", generator="tiny-llama",
            params=TINY.model_copy(update={"filter": "none", "max_rounds": 3}), device="cpu",
        )  # fmt: skip
    assert info.value.code == "no_usable_samples" and "3 rounds" in info.value.message
    assert listing(container) == before


# -- the job kind --------------------------------------------------------------------------------
def test_cancelling_midway_registers_nothing(container, source, monkeypatch):
    from generation.translora import pipeline

    jobs = JobService(container)
    reached, release = threading.Event(), threading.Event()
    original = pipeline._student_stage

    def gated(*args, **kwargs):  # hold the job just before the student trains
        reached.set()
        release.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_student_stage", gated)
    jobs.start()
    try:
        job = jobs.submit("transfer", SPEC)
        assert reached.wait(120)
        jobs.cancel(job.id)
        release.set()
        done = jobs.wait(job.id, timeout=120)
    finally:
        release.set()
        jobs.shutdown()
    assert done.state == "cancelled" and done.result is None
    assert listing(container) == [("src", 1)]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"to": "gpt-17"}, "unknown_name"),
        ({"to": "tiny-llama"}, "same_base_model"),
        ({"seeds": 1}, "invalid_spec"),
        ({"seeds": 6}, "invalid_spec"),  # header_count 6 must exceed the seeds
        ({"filter": "maybe"}, "invalid_spec"),
        ({"teacher_filter": "maybe"}, "invalid_spec"),
        ({"teacher_margin": 0}, "invalid_spec"),
        ({"teacher_calibration": 1}, "invalid_spec"),
    ],
)
def test_job_spec_is_validated_at_submit(container, source, change, code):
    jobs = JobService(container)
    with pytest.raises(HubError) as info:
        jobs.submit("transfer", {**SPEC, **change})
    assert info.value.code == code
    assert jobs.list() == []


# -- REST and CLI -------------------------------------------------------------------------------
def test_post_transfers_accepts_and_validates(container, token, source):
    with api_client(container, run_jobs=False) as client:
        r = client.post("/transfers", headers=auth(token), json=SPEC)
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/jobs/{r.json()['job_id']}"
        job = client.get(f"/jobs/{r.json()['job_id']}").json()
        spec = job["spec"]
        assert (job["kind"], job["state"], spec["adapter"]) == ("transfer", "queued", "src@1")
        assert spec["task_resolved"].endswith("t.json")
        digest = client.get("/adapters/src").json()["digest"]
        assert spec["pinned_digests"] == {"src@1": digest}
        assert_error(client.post("/transfers", json=SPEC), 401)
        cases = [
            ({"adapter": "missing"}, 404, "not_found"),
            ({"to": "tiny-llama"}, 400, "same_base_model"),
            ({"to": "gpt-17"}, 400, "unknown_name"),
            ({"task": "../etc/passwd"}, 422, "invalid_request"),
            ({"seeds": 1}, 422, "invalid_request"),
            ({"bogus": 1}, 422, "invalid_request"),
        ]
        for change, status, code in cases:
            assert_error(client.post("/transfers", headers=auth(token), json={**SPEC, **change}),
                         status, code)  # fmt: skip
        assert client.get("/jobs").json()["count"] == 1


def test_post_transfers_runs_to_an_adapter(container, token, source):
    with api_client(container) as client:
        r = client.post("/transfers", headers=auth(token), json=SPEC)
        job = poll_job(client, r.json()["job_id"], timeout=600)
        assert job["state"] == "succeeded", job
        assert (job["result"], job["progress"]) == ("moved@1", 1.0)
        assert "6 inputs" in job["message"]
        detail = client.get("/adapters/moved").json()
        assert detail["source"] == "transferred"
        assert detail["lineage"]["parents"][0]["relation"] == "transferred"


def test_cli_transfer_and_its_refusals(container, source, monkeypatch):
    home = container.settings.home
    monkeypatch.setenv("LORADEX_DATABASE_URL", container.settings.resolved_database_url)
    flags = ["--generator", "tiny-llama", "--seeds", "3", "--synthetic", "4", "--steps", "2",
             "--batch", "2", "--disc-steps", "2", "--disc-real", "8", "--max-rounds", "6",
             "--device", "cpu"]  # fmt: skip
    for args, fragment in [
        (["--to", "gpt-17"], "known base models"),
        (["--to", "tiny-llama"], "same_base_model"),
        (["--to", "tiny-target", "--filter", "maybe"], "filter"),
        (["--to", "tiny-target", "--teacher-filter", "maybe"], "teacher_filter"),
        (["--to", "tiny-target", "--teacher-margin", "0"], "teacher_margin"),
        (["--to", "tiny-target", "--task", "no_such_task"], "no_such_task"),
    ]:
        run = cli(home, "transfer", "src", "--name", "t", *flags, *args)
        assert run.code == 2, run.stderr
        assert fragment in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = cli(home, "transfer", "src", "--to", "tiny-target", "--name", "t", *flags,
              "--filter", "none", "--json")  # fmt: skip
    assert run.code == 0, run.stderr
    item = run.json()
    assert (item["name"], item["source"], item["created"]) == ("t", "transferred", True)
    assert item["metadata"]["synthetic_kept"] == 4


def test_cli_transfer_refuses_bad_fields_before_loading_a_model(container, source, monkeypatch):
    home = container.settings.home
    monkeypatch.setenv("LORADEX_DATABASE_URL", container.settings.resolved_database_url)

    def no_load(*_a, **_k):
        raise AssertionError("a model was loaded before the transfer was validated")

    monkeypatch.setattr(type(container.models), "load", no_load)
    before = listing(container)
    for args, fragment in [
        (["--tag", ""], "tags"),
        (["--tag", "ok", "--tag", "x" * 65], "tags"),
        (["--lr", "nan"], "finite number"),
        (["--lr", "inf"], "finite number"),
        (["--teacher-margin", "nan"], "finite number"),
        (["--device", "tpu9"], "unknown device"),
    ]:
        run = cli(home, "transfer", "src", "--to", "tiny-target", "--name", "t",
                  "--generator", "tiny-llama", *args)  # fmt: skip
        assert run.code == 2, (args, run.stderr)
        assert fragment in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert listing(container) == before


def test_transfer_params_refuse_non_finite_floats():
    for field in ("lr", "disc_lr", "temperature", "top_p", "teacher_margin"):
        for value in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match="finite number"):
                TransferParams.model_validate({field: value})
