"""Issue 5's bad-input list end to end (CLI, service and the merge job kind), and 200 adapters
through a merge job with progress. Every refusal: exit 2 / a typed error naming the problem,
nothing registered (no catalog row, no new blob)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hub.core.errors import BadInputError, HubError
from hub.core.models import AdapterMeta
from hub.core.names import AdapterRef
from hub.services.jobs import JobContext
from hub.services.merge_jobs import run_merge, validate_merge
from storage.peft_format import read_peft_bytes
from storage.safetensors_io import serialize_safetensors
from tests.api_helpers import make_container
from tests.cli_helpers import cli
from tests.factories import TINY_BASE, TINY_CONFIG, make_tensors, peft_config, write_adapter_dir


def snapshot(home):
    listing = cli(home, "ls", "--all-versions", "--json").json()["data"]
    blobs = sorted(p.name for p in (home / "blobs" / "sha256").rglob("*") if p.is_file())
    return sorted((i["name"], i["version"]) for i in listing), blobs


@pytest.fixture
def home(tmp_path, catalog_url, monkeypatch):
    monkeypatch.setenv("LORADEX_DATABASE_URL", catalog_url)
    return seed_home(tmp_path)


def seed_home(tmp_path):
    """a, b (rank 4, q and v), q-only, k-only, and biased (not mergeable), through the CLI."""
    h = tmp_path / "home"
    for i, name in enumerate(["a", "b"]):
        assert (
            cli(h, "add", write_adapter_dir(tmp_path / name, seed=20 + i), "--name", name).code == 0
        )
    q_only = write_adapter_dir(tmp_path / "q", seed=30, targets=("q_proj",))
    assert cli(h, "add", q_only, "--name", "q-only").code == 0
    k_only = write_adapter_dir(tmp_path / "k", seed=31, targets=("k_proj",))
    assert cli(h, "add", k_only, "--name", "k-only").code == 0
    tensors = make_tensors(seed=32)
    for key in [k for k in tensors if k.endswith("lora_B.weight")]:
        tensors[key.replace(".weight", ".bias")] = np.ones(tensors[key].shape[0], np.float32)
    biased = write_adapter_dir(
        tmp_path / "bias", tensors=tensors, config=peft_config(lora_bias=True)
    )
    assert cli(h, "add", biased, "--name", "biased").code == 0
    return h


BAD = [
    (["a", "biased"], "cat", [], "bias"),
    (["k-only", "q-only"], "cat", [], "share no adapted module"),
    (["a", "q-only"], "cat", [], "adapt different modules"),
    (["a", "b"], "lego", ["--rank", "0"], "rank"),
    (["a", "b"], "lego", ["--rank", "9"], "exceeds"),
    (["a", "b"], "svd", ["--rank", "9"], "exceeds"),
    (["a", "b"], "rmm", ["--basis", "3"], "basis"),
    (["a", "b"], "rmm", ["--basis", "0", "--param", "centre=false"], "would be all zeros"),
    (["a", "b"], "svd", ["--weights", "1,nan"], "not finite"),
    (["a", "b"], "lego", ["--weights", "1,-0.5"], "negative"),
    (["a", "b"], "lego", ["--param", "centroid=middle"], "'mean', 'energy' or 'rank1'"),
    (["a", "b"], "lego", ["--param", "kernel=cosine"], "'direction' or 'product'"),
    (
        ["a", "b"],
        "lego",
        ["--param", "centroid=rank1", "--param", "output_reweight=true"],
        "output_reweight does not apply to centroid=rank1",
    ),
    (["a", "b"], "cat", ["--weights", "1"], "1 weights for 2"),
    (["a"], "svd", [], "at least 2"),
    (["a", "b"], "svd", ["--weights", "1e39,1"], "exceed 1e+06 in magnitude"),
    (["a", "b"], "svd", ["--device", "tpu"], "unknown device 'tpu'"),
    (["a", "b"], "svd", ["--device", "meta"], "device 'meta' is not supported"),
    (["a", "b"], "svd", ["--param", "rank=true"], "valid integer"),  # not rank 1
    (["a", "b"], "svd", ["--param", "rank=4.0"], "valid integer"),
    (["a", "b"], "rmm", ["--param", "basis=true"], "valid integer"),
    (["a", "b"], "svd", ["--rank", "4", "--param", "rank=5"], "disagree"),
    (["a", "b"], "ties", ["--param", "density=0.5", "--param", "density=0.7"], "given twice"),
    # too deep for the JSON reader: taken as a string, then refused by the params model
    (["a", "b"], "svd", ["--param", "rank=" + "[" * 100_000], "valid integer"),
    (["a", "b"], "dare_ties", ["--seed", "-1"], "seed must be 0..2147483647, got -1"),
    (["a", "b"], "dare_ties", ["--seed", str(2**31)], "seed must be 0..2147483647"),
    (["a", "b"], "ties", ["--density", "nan"], "finite number"),
    # the card limits `edit` and REST apply (a CLI merge stored a 20,000-character card)
    (["a", "b"], "cat", ["--description", "x" * 10_001], "[invalid_description]"),
    (["a", "b"], "cat", [a for i in range(65) for a in ("--tag", f"t{i}")], "at most 64 tags"),
    (["a", "b"], "ties", ["--density", "inf"], "finite number"),
    (["a", "b"], "dare_linear", ["--density", "-inf"], "finite number"),
]


def test_cli_refusals_name_the_problem_and_register_nothing(home):
    before = snapshot(home)
    for refs, method, extra, fragment in BAD:  # one home for all cases: setup dominates
        run = cli(home, "merge", *refs, "--method", method, *extra, "--name", "bad")
        assert run.code == 2, (refs, method, extra, run.stderr)
        assert fragment in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
    assert snapshot(home) == before


def test_card_names_and_export_destinations_are_refused_by_what_they_are(home, tmp_path):
    """`add` keeps the card limits `edit` applies; `.` is named as a dot-only name; an export
    onto a file says it is a file."""
    before = snapshot(home)
    src = write_adapter_dir(tmp_path / "c", seed=40)
    for extra, fragment in [
        (["--description", "x" * 10_001], "[invalid_description]"),
        (["--description", "nul\x00byte"], "[invalid_description]"),
        (["--license", "l" * 129], "[invalid_license]"),
        ([a for i in range(65) for a in ("--tag", f"t{i}")], "[invalid_tags]: at most 64 tags"),
    ]:
        run = cli(home, "add", src, "--name", "c", *extra)
        assert run.code == 2 and fragment in run.stderr, (extra, run.stderr)
    for name in (".", ".."):
        run = cli(home, "merge", "a", "b", "--method", "cat", "--name", name)
        assert run.code == 2 and "is only dots" in run.stderr, run.stderr
    assert "contains '..'" in cli(home, "merge", "a", "b", "--name", "x..y").stderr
    assert snapshot(home) == before
    target = tmp_path / "a-file"
    target.write_text("")
    run = cli(home, "export", "a", str(target))
    assert run.code == 1 and "is a file, not a directory to export into" in run.stderr
    assert target.read_text() == ""


def test_an_rmm_merge_onto_weights_already_held_writes_no_orphan_artifact(home, tmp_path):
    """The name already holds the merged weights (uploaded): registering writes nothing, so
    the artifact is not written either, and the user is told the result cannot revert."""
    assert cli(home, "merge", "a", "b", "--method", "rmm", "--name", "r1").code == 0
    again = cli(home, "merge", "a", "b", "--method", "rmm", "--name", "r1")  # the same merge
    assert again.code == 0 and "artifact" not in again.stderr, again.stderr
    assert cli(home, "revert", "r1", "--member", "a", "--name", "a-back").code == 0
    assert cli(home, "export", "r1", str(tmp_path / "r1")).code == 0
    assert cli(home, "add", str(tmp_path / "r1"), "--name", "r2").code == 0
    before = snapshot(home)
    run = cli(home, "merge", "a", "b", "--method", "rmm", "--name", "r2", "--json")
    assert run.code == 0 and run.json()["created"] is False
    assert "r2@1 already holds these weights without this merge's RMM artifact" in run.stderr
    assert snapshot(home) == before  # no version, no blob
    refused = cli(home, "revert", "r2", "--member", "a")
    assert refused.code == 2 and "[not_reversible]" in refused.stderr


def test_merge_params_refuse_non_finite_floats():
    from pydantic import ValidationError

    from merging.methods.params import DensityParams
    from merging.methods.svd import SvdParams

    for model, field in [(DensityParams, "density"), (SvdParams, "clamp"), (SvdParams, "min_gap")]:
        for value in (float("nan"), float("inf")):
            with pytest.raises(ValidationError, match="finite number"):
                model.model_validate({**({"density": 0.5} if model is DensityParams else {}),
                                      field: value})  # fmt: skip


def _base_config(tmp_path, **changes):
    cfg = tmp_path / f"config-{len(changes)}.json"
    cfg.write_text(json.dumps({**TINY_CONFIG, **changes}))
    return cfg


def test_inputs_recorded_with_different_base_weights_are_refused(tmp_path, monkeypatch):
    """Same base id, but the base was re-registered with other weights in between: the catalog's
    fingerprints differ although the adapter files do not say so."""
    h = tmp_path / "fp"
    cfg = _base_config(tmp_path)
    for name, fp in (("x", "a" * 64), ("y", "b" * 64)):
        assert cli(h, "base", "add", TINY_BASE, "--config", cfg, "--fingerprint", fp).code == 0
        src = write_adapter_dir(tmp_path / name, seed=ord(name))
        assert cli(h, "add", src, "--name", name).code == 0
    before = snapshot(h)
    run = cli(h, "merge", "x", "y", "--method", "cat", "--name", "xy")
    assert run.code == 2 and "[base_model_mismatch]" in run.stderr, run.stderr
    assert "fingerprint" in run.stderr and snapshot(h) == before


def test_inputs_that_no_longer_fit_the_registered_base_are_refused_before_any_write(home, tmp_path):
    # the base is registered after the adapters, with other shapes: publishing the merge would
    # fail its shape check, so the merge is refused up front (no artifact blob left behind)
    assert (
        cli(
            home, "base", "add", TINY_BASE, "--config", _base_config(tmp_path, hidden_size=128)
        ).code
        == 0
    )
    before = snapshot(home)
    run = cli(home, "merge", "a", "b", "--method", "rmm", "--name", "r")
    assert run.code == 2 and "[incompatible_base_model]" in run.stderr, run.stderr
    assert run.stderr.startswith("error [incompatible_base_model]: a@1: ")
    assert snapshot(home) == before


def test_revert_resolves_duplicates_refuses_ambiguity_and_checks_the_name_first(home, tmp_path):
    assert cli(home, "add", write_adapter_dir(tmp_path / "a2", seed=40), "--name", "a").code == 0
    assert cli(home, "merge", "a", "a", "b", "--method", "rmm", "--name", "twice").code == 0
    back = cli(home, "revert", "twice", "--member", "a", "--json")  # a@2 twice: one member
    assert back.code == 0 and back.stderr == "", back.stderr  # no torch warning either
    assert back.json()["name"] == "a.reverted"
    assert cli(home, "merge", "a@1", "a@2", "b", "--method", "rmm", "--name", "both").code == 0
    before = snapshot(home)
    run = cli(home, "revert", "both", "--member", "a")
    assert run.code == 2 and "[rmm_member_ambiguous]" in run.stderr and "a@1, a@2" in run.stderr
    run = cli(home, "revert", "both", "--member", "a@1", "--name", "bad name")
    assert run.code == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert snapshot(home) == before
    assert cli(home, "revert", "both", "--member", "a@1", "--name", "a1").code == 0


def test_intersection_policy_merges_what_the_cli_refused_in_strict_mode(home):
    run = cli(home, "merge", "a", "q-only", "--modules", "intersection", "--name", "aq", "--json")
    assert run.code == 0, run.stderr
    report = run.json()["report"]
    assert report["modules_skipped"] and all("v_proj" in m for m in report["modules_skipped"])


class RecordingContext(JobContext):
    """A job context that keeps every progress report (the real one throttles DB writes)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str | None]] = []

    def check(self) -> None:
        return None

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.seen.append((fraction, message))


def _bulk_container(tmp_path, n: int):
    c = make_container(tmp_path / "h")
    cfg = json.dumps(peft_config(r=2)).encode()  # q_proj and v_proj: two shape batches
    c.registry.add_many(
        [
            (
                read_peft_bytes(cfg, serialize_safetensors(make_tensors(r=2, layers=1, seed=i))),
                AdapterMeta(name=f"m{i:03d}"),
                {},
            )
            for i in range(n)
        ]
    )
    return c


def test_two_hundred_adapters_through_a_merge_job_with_progress(tmp_path):
    c = _bulk_container(tmp_path, 200)
    names = [f"m{i:03d}" for i in range(200)]
    spec = validate_merge(
        c, {"adapters": names, "method": "svd", "params": {"rank": 4}, "name": "all200"}
    )
    assert spec["adapters"][0] == "m000@1" and len(spec["adapters"]) == 200
    ctx = RecordingContext()
    outcome = run_merge(c, spec, ctx)
    fractions = [f for f, _ in ctx.seen]
    assert fractions == sorted(fractions) and len(fractions) >= 3
    assert ctx.seen[-1][1] == "merged 2/2 modules"
    item = c.registry.show(AdapterRef("all200"))
    assert outcome.message == "merged into all200@1" and item.rank == 4
    assert len(item.lineage.parents) == 200
    assert item.lineage.recipe["report"]["n_adapters"] == 200


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"adapters": ["m000"]}, "merge_too_few_adapters"),
        ({"weights": [1.0, float("nan")]}, "weights_not_finite"),
        ({"method": "lego", "weights": [1.0, -1.0]}, "weights_negative"),
        ({"adapters": ["m000", "other"]}, "base_model_mismatch"),
    ],
)
def test_merge_jobs_refuse_at_submit_time(tmp_path, change, code):
    c = _bulk_container(tmp_path, 2)
    other = write_adapter_dir(tmp_path / "o", seed=9, config=peft_config(base="another-model"))
    c.registry.add_path(other, AdapterMeta(name="other"))
    spec = {"adapters": ["m000", "m001"], "method": "svd", "name": "x", **change}
    with pytest.raises(HubError) as exc:
        validate_merge(c, spec)
    assert exc.value.code == code and isinstance(exc.value, BadInputError)
    assert c.registry.ls()[1] == 3  # the two inputs and "other": nothing new


@pytest.mark.parametrize("change", ["deleted", "registered-again"])
def test_an_input_removed_while_the_merge_computes_registers_nothing(
    home, tmp_path, monkeypatch, change
):
    """The parent edges must name the rows that were merged: an input deleted (or deleted and
    registered again with other weights) while the merge ran fails it, before any write."""
    import merging

    real = merging.merge

    def merge_while_b_goes(*args, **kwargs):
        result = real(*args, **kwargs)
        assert cli(home, "rm", "b").code == 0
        if change == "registered-again":
            other = write_adapter_dir(tmp_path / "other", seed=77)
            assert cli(home, "add", other, "--name", "b").code == 0
        return result

    monkeypatch.setattr(merging, "merge", merge_while_b_goes)
    run = cli(home, "merge", "a", "b", "--method", "rmm", "--name", "ab")
    code = "input_deleted" if change == "deleted" else "input_changed"
    assert run.code in (1, 2) and f"[{code}]" in run.stderr, run.stderr
    assert "while the merge ran; nothing was registered" in run.stderr
    listing, blobs = snapshot(home)
    assert "ab" not in {name for name, _ in listing}
    referenced = {i["digest"] for i in cli(home, "ls", "--all-versions", "--json").json()["data"]}
    assert set(blobs) == referenced  # no artifact blob written
