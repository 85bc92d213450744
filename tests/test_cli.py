"""The CLI contract (CLI.md): commands, --json shapes, exit codes, data dir, no partial writes."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.cli_helpers import cli, cli_proc
from tests.factories import TINY_BASE, TINY_CONFIG, make_tensors, peft_config, write_adapter_dir

ITEM_FIELDS = {"name", "version", "base_model", "description", "tags", "source"}


def state(home):
    """Everything a failed command must leave untouched: catalog listing and blob files."""
    listing = cli(home, "ls", "--all-versions", "--json").json()["data"]
    blobs = sorted(p.name for p in (home / "blobs").rglob("*") if p.is_file())
    return listing, blobs


@pytest.fixture
def home(tmp_path, catalog_url, monkeypatch):
    """A data dir whose catalog is SQLite or PostgreSQL (``catalog_url`` runs both)."""
    monkeypatch.setenv("LORADEX_DATABASE_URL", catalog_url)
    h = tmp_path / "home"
    assert cli(h, "init").code == 0
    return h


def test_init_is_idempotent_and_reports_json(tmp_path):
    h = tmp_path / "h"
    first = cli(h, "init", "--json")
    second = cli(h, "init", "--json")
    assert first.code == second.code == 0
    assert first.json()["home"] == str(h)
    assert (h / "catalog.db").is_file()


def test_add_ls_show_json_contract(home, tmp_path):
    src = write_adapter_dir(tmp_path / "a1", seed=1)
    run = cli(
        home,
        "add",
        src,
        "--name",
        "alpha",
        "--description",
        "does alpha",
        "--tag",
        "x",
        "--tag",
        "y",
        "--license",
        "mit",
        "--json",
    )
    assert run.code == 0, run.stderr
    item = run.json()
    assert item.keys() >= ITEM_FIELDS
    assert (item["name"], item["version"], item["created"]) == ("alpha", 1, True)
    assert item["base_model"] == TINY_BASE and item["source"] == "upload"
    assert item["tags"] == ["x", "y"] and item["rank"] == 4

    listing = cli(home, "ls", "--json").json()
    assert listing["count"] == 1 and listing["data"][0].keys() >= ITEM_FIELDS

    detail = cli(home, "show", "alpha@1", "--json").json()
    assert {"digest", "modules", "lineage", "evaluations"} <= detail.keys()
    weights = (src / "adapter_model.safetensors").read_bytes()
    assert detail["digest"] == hashlib.sha256(weights).hexdigest()
    assert len(detail["modules"]) == 4
    assert detail["lineage"] == {"parents": [], "recipe": None}


def test_add_twice_is_idempotent_and_stores_one_blob(home, tmp_path):
    src = write_adapter_dir(tmp_path / "a", seed=2)
    a = cli(home, "add", src, "--name", "dup", "--json").json()
    b = cli(home, "add", src, "--name", "dup", "--json").json()
    assert (a["version"], b["version"]) == (1, 1)
    assert (a["created"], b["created"]) == (True, False)
    assert len(state(home)[1]) == 1


def test_new_weights_make_a_new_version(home, tmp_path):
    cli(home, "add", write_adapter_dir(tmp_path / "v1", seed=3), "--name", "n")
    run = cli(home, "add", write_adapter_dir(tmp_path / "v2", seed=4), "--name", "n", "--json")
    assert run.json()["version"] == 2
    assert cli(home, "show", "n", "--json").json()["version"] == 2
    assert cli(home, "show", "n@1", "--json").json()["version"] == 1
    assert cli(home, "ls", "--all-versions", "--json").json()["count"] == 2


def test_export_round_trips_bytes_and_config(home, tmp_path):
    src = write_adapter_dir(tmp_path / "src", seed=5)
    cli(home, "add", src, "--name", "exp")
    out = tmp_path / "out"
    assert cli(home, "export", "exp", out).code == 0
    assert (out / "adapter_model.safetensors").read_bytes() == (
        src / "adapter_model.safetensors"
    ).read_bytes()
    exported = json.loads((out / "adapter_config.json").read_text())
    assert exported == json.loads((src / "adapter_config.json").read_text())
    # exporting onto a non-empty directory is refused, and leaves it alone
    again = cli(home, "export", "exp", out)
    assert again.code != 0 and "exists" in again.stderr.lower()


def test_rm_and_gc(home, tmp_path):
    cli(home, "add", write_adapter_dir(tmp_path / "a", seed=6), "--name", "gone")
    assert cli(home, "rm", "gone").code == 0
    assert state(home) == ([], [])
    assert cli(home, "show", "gone").code == 2
    # an orphan blob (a crashed add) is collected by gc, not before its grace period
    orphan = home / "blobs" / "sha256" / "ab" / ("ab" + "0" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"junk")
    assert cli(home, "gc", "--json").json()["kept_young_blobs"] == 1
    report = cli(home, "gc", "--grace", "0", "--json").json()
    assert report["removed_blobs"] == ["ab" + "0" * 62]
    assert not orphan.exists()


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("a/b", "path separator"),
        ("..", ".."),
        ("a..b", ".."),
        ("bad\x00name", "NUL"),
        ("x" * 300, "300 characters"),
        ("sp ace", "characters outside"),
    ],
)
def test_bad_names_are_refused_and_change_nothing(home, tmp_path, name, fragment):
    cli(home, "add", write_adapter_dir(tmp_path / "ok", seed=7), "--name", "keep")
    before = state(home)
    run = cli(home, "add", write_adapter_dir(tmp_path / "new", seed=8), "--name", name)
    assert run.code == 2
    assert fragment in run.stderr and "Traceback" not in run.stderr
    assert state(home) == before


def test_bad_adapters_exit_2_with_specific_code_and_change_nothing(home, tmp_path):
    cli(home, "add", write_adapter_dir(tmp_path / "ok", seed=9), "--name", "keep")
    before = state(home)
    cases = {}
    # pickle only
    d = tmp_path / "pickle"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps(peft_config()))
    (d / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    cases["pickle_refused"] = d
    # NaN weights
    t = make_tensors(seed=10)
    next(iter(t.values()))[0, 0] = float("nan")
    cases["weights_not_finite"] = write_adapter_dir(tmp_path / "nan", tensors=t)
    # A without B
    t = make_tensors(seed=11)
    t.pop(next(k for k in t if k.endswith("lora_B.weight")))
    cases["lora_unpaired"] = write_adapter_dir(tmp_path / "unpaired", tensors=t)
    # config targets nothing present
    cases["target_modules_unmatched"] = write_adapter_dir(
        tmp_path / "targets",
        tensors=make_tensors(seed=12),
        config=peft_config(targets=["gate_proj"]),
    )
    # truncated safetensors
    d = write_adapter_dir(tmp_path / "trunc", seed=13)
    w = d / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:-10])
    cases["safetensors"] = d
    for code, path in cases.items():
        run = cli(home, "add", path, "--name", "new")
        assert run.code == 2, (code, run.stderr)
        assert code in run.stderr, (code, run.stderr)
        assert "Traceback" not in run.stderr
    assert cli(home, "add", tmp_path / "missing", "--name", "new").code == 2
    assert state(home) == before


def test_base_model_shape_check(home, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY_CONFIG))
    reg = cli(home, "base", "add", TINY_BASE, "--config", cfg, "--fingerprint", "f" * 64, "--json")
    assert reg.code == 0 and reg.json()["modules"] == 2 * 7
    ok = cli(home, "add", write_adapter_dir(tmp_path / "ok", seed=14), "--name", "fits", "--json")
    assert ok.code == 0 and ok.json()["base_model_fingerprint"] == "f" * 64
    # an adapter whose v_proj is 64 wide: the base's v_proj is 32 wide
    shapes = {"q_proj": (64, 64), "v_proj": (64, 64)}
    bad = write_adapter_dir(tmp_path / "bad", tensors=make_tensors(seed=15, shapes=shapes))
    before = state(home)
    run = cli(home, "add", bad, "--name", "misfit")
    assert run.code == 2
    assert "incompatible_base_model" in run.stderr
    assert "model.layers.0.self_attn.v_proj" in run.stderr and "out=64" in run.stderr
    assert state(home) == before
    # unknown modules are named too
    t = make_tensors(seed=16, layers=3)
    run = cli(home, "add", write_adapter_dir(tmp_path / "deep", tensors=t), "--name", "deep")
    assert run.code == 2 and "model.layers.2.self_attn.q_proj does not exist" in run.stderr


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"architectures": "LlamaForCausalLM"}, "'architectures' must be a list"),
        ({"architectures": [5]}, "'architectures' must be a list"),
        ({"num_hidden_layers": 1e12}, "'num_hidden_layers' must be an integer from 1 to 10,000"),
        ({"hidden_size": -5}, "'hidden_size' must be an integer"),
        ({"hidden_size": 0}, "'hidden_size' must be an integer"),
        ({"hidden_size": 1e30}, "'hidden_size' must be an integer"),
        ({"hidden_size": "x"}, "'hidden_size' must be an integer"),
        ({"hidden_size": True}, "'hidden_size' must be an integer"),
        ({"intermediate_size": 10**7}, "'intermediate_size' must be an integer"),
        ({"num_key_value_heads": -1}, "'num_key_value_heads' must be an integer"),
        ({"head_dim": 2.5}, "'head_dim' must be an integer"),
        ({"vocab_size": "big"}, "'vocab_size' must be an integer"),
        ({"num_attention_heads": None}, "missing field 'num_attention_heads'"),
        ({"num_attention_heads": 128}, "smaller than 'num_attention_heads'"),
    ],
)
def test_base_add_refuses_an_invalid_config(home, tmp_path, override, fragment):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**TINY_CONFIG, **override}))
    run = cli(home, "base", "add", TINY_BASE, "--config", cfg)
    assert run.code == 2, run.stderr
    assert run.stderr.startswith("error [base_config_invalid]") and fragment in run.stderr
    assert cli(home, "base", "ls", "--json").json()["count"] == 0


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000 + "]" * 100_000])
def test_base_add_refuses_an_unreadable_config_file(home, tmp_path, text):
    cfg = tmp_path / "config.json"
    cfg.write_text(text)
    run = cli(home, "base", "add", TINY_BASE, "--config", cfg)
    assert run.code == 2 and run.stderr.startswith(f"error [bad_input]: cannot read config {cfg}")
    assert len(run.stderr.splitlines()) == 1
    assert cli(home, "base", "ls", "--json").json()["count"] == 0


def test_base_config_must_be_a_json_object():
    from hub.core.architectures import validate_base_config
    from hub.core.errors import BadInputError

    for bad in ([], "x", 5, None):
        with pytest.raises(BadInputError, match="expected a JSON object") as info:
            validate_base_config(bad)
        assert info.value.code == "base_config_invalid"
    assert validate_base_config(TINY_CONFIG) is TINY_CONFIG


def test_unregistered_base_warns_but_registers(home, tmp_path):
    run = cli(home, "add", write_adapter_dir(tmp_path / "a", seed=17), "--name", "w")
    assert run.code == 0 and "not registered" in run.stderr


def test_unknown_adapter_and_bad_refs_exit_2(home):
    for ref in ["nope", "nope@2", "bad@x", "bad@0"]:
        run = cli(home, "show", ref)
        assert run.code == 2 and run.stderr.startswith("error ["), (ref, run.stderr)


def test_data_dir_precedence(tmp_path):
    env_home, flag_home, xdg = tmp_path / "env", tmp_path / "flag", tmp_path / "xdg"
    env = {"LORADEX_HOME": str(env_home), "XDG_DATA_HOME": str(xdg)}
    assert cli_proc("--data-dir", flag_home, "init", env=env).code == 0
    assert (flag_home / "catalog.db").exists() and not env_home.exists()
    assert cli_proc("init", env=env).code == 0
    assert (env_home / "catalog.db").exists()
    no_home_env = {k: v for k, v in os.environ.items() if k != "LORADEX_HOME"}
    no_home_env["XDG_DATA_HOME"] = str(xdg)
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "hub.cli", "init"], env=no_home_env, check=True)
    assert (xdg / "loradex" / "catalog.db").exists()


def test_a_misspelt_setting_variable_is_named_once_on_stderr(tmp_path):
    """Settings read only the variables they know: a typo would silently keep the default."""
    env = {"LORADEX_TEXT_EMBEDER": "minilm-int8", "LORADEX_TEST_WRAPPER_FLAG": "1"}
    run = cli_proc("--data-dir", tmp_path, "ls", "--json", env=env)
    assert run.code == 0 and json.loads(run.stdout)["data"] == []  # stdout stays pure JSON
    assert run.stderr.splitlines() == [
        "warning: LORADEX_TEXT_EMBEDER is not a setting and is ignored; did you mean "
        "LORADEX_TEXT_EMBEDDER?"
    ]  # once, and nothing about a name that resembles no setting
    clean = cli_proc("--data-dir", tmp_path, "ls", "--json", env={"LORADEX_TEXT_EMBEDDER": "hash"})
    assert clean.code == 0 and clean.stderr == ""


def test_misspelt_settings_matches_names_as_settings_do():
    from hub.config import misspelt_settings

    env = {
        "loradex_serch_device": "cpu",  # settings read names in any case; so does the check
        "LORADEX_HOME": "/x",
        "LORADEX_TEST_PG_URL": "postgresql://",
        "PATH": "/bin",
    }
    assert misspelt_settings(env) == [
        "loradex_serch_device is not a setting and is ignored; did you mean LORADEX_SEARCH_DEVICE?"
    ]


def test_subprocess_json_stdout_is_pure_and_errors_have_no_traceback(tmp_path):
    home = tmp_path / "p"
    run = cli_proc("--data-dir", home, "ls", "--json")
    assert run.code == 0 and json.loads(run.stdout) == {"data": [], "count": 0, "total": 0}
    bad = cli_proc("--data-dir", home, "show", "missing")
    assert bad.code == 2 and "Traceback" not in bad.stderr and bad.stdout == ""


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    """Parse errors follow the same one-line contract as every other bad input."""
    home = str(tmp_path / "u")
    cases = [
        (["search", "x", "--k", "abc"], "Invalid value for '--k'"),
        (["search"], "Missing argument"),
        (["ls", "--bogus"], "No such option: --bogus"),
        (["nosuchcmd"], "No such command 'nosuchcmd'"),
    ]
    for args, fragment in cases:
        run = cli_proc("--data-dir", home, *args)
        lines = run.stderr.strip().splitlines()
        assert run.code == 2 and run.stdout == "", (args, run)
        assert len(lines) == 1 and lines[0].startswith("error [usage]: "), (args, run.stderr)
        assert fragment in lines[0] and "--help" in lines[0]
    bare = cli_proc()  # no command: the help on stdout, as typer prints it
    assert bare.code == 2 and "Usage" in bare.stdout and "search" in bare.stdout
    assert cli_proc("search", "--help").code == 0
    assert cli_proc("--data-dir", home, "search", "").code == 2  # HubError exit codes kept


def test_a_single_valued_option_given_twice_is_refused(home, tmp_path):
    """click keeps the last value of a repeated option: `--tag letters --tag words` filtered by
    `words` alone and `--name a --name b` registered `b`. Now a usage error, nothing written."""
    src = write_adapter_dir(tmp_path / "a", seed=1)
    assert cli(home, "add", src, "--name", "a").code == 0
    before = state(home)
    cases = [
        (["add", src, "--name", "b", "--name", "c"], "'--name'"),
        (["ls", "--limit", "1", "--limit", "5"], "'--limit'"),
        (["search", "q", "--tag", "x", "--tag", "y"], "'--tag'"),
        (["search", "q", "--k", "2", "--k", "3"], "'--k'"),
        (["jobs", "ls", "--limit", "1", "--limit", "2"], "'--limit'"),
        # a flag with a negative form: the two spellings contradict each other
        (["mix", "a", "a", "--name", "m", "--layerwise", "--no-layerwise"], "--layerwise"),
    ]
    for args, fragment in cases:
        run = cli_proc("--data-dir", home, *args)
        lines = run.stderr.strip().splitlines()
        assert run.code == 2 and run.stdout == "", (args, run)
        assert len(lines) == 1 and lines[0].startswith("error [usage]: "), (args, run.stderr)
        assert fragment in lines[0] and "given twice" in lines[0], (args, lines[0])
    group = cli_proc("--data-dir", home, "--data-dir", tmp_path / "other", "ls")
    assert group.code == 2 and "'--data-dir'" in group.stderr and "given twice" in group.stderr
    assert not (tmp_path / "other").exists()
    assert state(home) == before
    # Repeating a plain flag asks for the same thing twice; list options take many values.
    listed = cli(home, "ls", "--json", "--json")
    assert listed.code == 0 and listed.json()["count"] == 1
    assert cli(home, "show", "a", "--json", "--json").json()["name"] == "a"


def test_concurrent_cli_adds_get_gapless_versions(home, tmp_path):
    """Several `loradex add` processes at once on the same name (SQLite and PostgreSQL)."""
    import subprocess
    import sys

    n = 6
    srcs = [write_adapter_dir(tmp_path / f"c{i}", seed=100 + i) for i in range(n)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub.cli",
                "--data-dir",
                str(home),
                "add",
                str(s),
                "--name",
                "race",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in srcs
    ]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), [e for _, e, _ in results]
    assert all("locked" not in e for _, e, _ in results)
    versions = sorted(json.loads(o)["version"] for o, _, _ in results)
    assert versions == list(range(1, n + 1))
