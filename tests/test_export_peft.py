"""End to end through the catalog: an adapter saved by PEFT, registered with `loradex add` and
exported with `loradex export`, loads with `PeftModel.from_pretrained` with identical logits."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from tests.cli_helpers import cli
from tests.factories import TINY_CONFIG, tiny_llama


@pytest.mark.parametrize(
    "lora_kwargs",
    [
        {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        {
            "r": 4,
            "lora_alpha": 8,
            "target_modules": ["q_proj", "v_proj", "o_proj"],
            "rank_pattern": {"o_proj": 2},
            "alpha_pattern": {"v_proj": 3},
            "use_rslora": True,
        },
    ],
    ids=["plain", "patterns-rslora"],
)
def test_add_export_reload_identical_logits(tmp_path, lora_kwargs):
    base = tiny_llama()
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(**lora_kwargs))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)
    src = tmp_path / "src"
    peft_model.save_pretrained(src)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY_CONFIG))

    home = tmp_path / "home"
    base_id = json.loads((src / "adapter_config.json").read_text())["base_model_name_or_path"]
    if base_id:
        assert cli(home, "base", "add", base_id, "--config", cfg).code == 0
    run = cli(home, "add", src, "--name", "tiny", "--json")
    assert run.code == 0, run.stderr
    out = tmp_path / "out"
    assert cli(home, "export", "tiny", out).code == 0

    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), out).eval()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = peft_model.eval()(ids).logits
        got = reloaded(ids).logits
    assert torch.equal(expected, got)
    assert not torch.equal(expected, base(ids).logits)  # the adapter really does something


@pytest.mark.parametrize(
    "method, extra", [("svd", ["--rank", "3"]), ("cat", []), ("lego", ["--rank", "4"])]
)
def test_merged_adapter_exports_and_loads_in_peft(tmp_path, method, extra):
    """PEFT reads our merged config (ranks, alphas) exactly as we mean it."""
    from storage.peft_format import read_peft_dir

    base = tiny_llama()
    home = tmp_path / "home"
    for i, name in enumerate(["x", "y"]):
        m = get_peft_model(
            copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
        )
        torch.manual_seed(10 + i)
        with torch.no_grad():
            for pname, p in m.named_parameters():
                if "lora_" in pname:
                    p.normal_(0, 0.2)
        m.save_pretrained(tmp_path / name)
        assert cli(home, "add", tmp_path / name, "--name", name).code == 0
    run = cli(home, "merge", "x", "y", "--method", method, *extra, "--name", "xy")
    assert run.code == 0, run.stderr
    out = tmp_path / "out"
    assert cli(home, "export", "xy", out).code == 0
    merged = PeftModel.from_pretrained(copy.deepcopy(base), out).merge_and_unload()
    ours = read_peft_dir(out).adapter
    base_sd, merged_sd = base.state_dict(), merged.state_dict()
    for name, module in ours.modules.items():
        expected = base_sd[f"{name}.weight"].double() + torch.from_numpy(module.delta())
        torch.testing.assert_close(
            merged_sd[f"{name}.weight"].double(), expected, atol=1e-5, rtol=1e-5
        )


def _lora_modules(model) -> set[str]:
    return {n.removesuffix(".lora_A") for n, _ in model.named_modules() if n.endswith("lora_A")}


def _saved(tmp_path, base, name: str, seed: int, **lora) -> object:
    m = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, **lora))
    torch.manual_seed(seed)
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if "lora_" in pname:
                p.normal_(0, 0.2)
    m.save_pretrained(tmp_path / name)
    config = tmp_path / name / "adapter_config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": "tiny-llama"})
    )
    return tmp_path / name


def test_a_result_holding_some_layers_targets_exactly_those(tmp_path):
    """A merge (intersection) or revert of an adapter restricted to layer 0 holds layer 0 only:
    its config must say so, or PEFT adds zero layer-1 modules and warns of missing keys."""
    base = tiny_llama()
    home = tmp_path / "home"
    qv = ["q_proj", "v_proj"]
    low = _saved(tmp_path, base, "low", 1, target_modules=qv, layers_to_transform=[0])
    full = _saved(tmp_path, base, "full", 2, target_modules=qv)
    irregular = r".*\.0\.self_attn\.q_proj|.*\.1\.self_attn\.v_proj"  # no layer x leaf grid
    odd = _saved(tmp_path, base, "odd", 3, target_modules=irregular)
    for name, path in (("low", low), ("full", full), ("odd", odd)):
        assert cli(home, "add", path, "--name", name).code == 0, name
    cases = {
        "cat": ["merge", "low", "full", "--method", "cat", "--modules", "intersection"],
        "rmm": ["merge", "low", "full", "--method", "rmm", "--modules", "union"],
        "odd": ["merge", "odd", "odd", "--method", "cat"],
    }
    for name, args in cases.items():
        assert cli(home, *args, "--name", name).code == 0, name
    assert cli(home, "revert", "rmm", "--member", "low", "--name", "low-back").code == 0
    names = [f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in qv]
    # the base not registered: only full names are exact (leaf names and layer numbers could
    # also select another stack of layers the base may have)
    expect = {
        "cat": {"target_modules": names[:2], "layers_to_transform": None},
        "low-back": {"target_modules": names[:2], "layers_to_transform": None},
        "rmm": {"target_modules": names, "layers_to_transform": None},
        "odd": {"target_modules": [names[0], names[3]]},
    }
    for name, fields in expect.items():
        _exports_exactly(home, base, tmp_path / f"out-{name}", name, fields)
    # registered: the shortest exact form
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    assert cli(home, "base", "add", "tiny-llama", "--config", tmp_path / "config.json").code == 0
    for name, args in cases.items():
        assert cli(home, *args, "--name", f"{name}2").code == 0, name
    expect = {
        "cat2": {"target_modules": qv, "layers_to_transform": [0], "layers_pattern": "layers"},
        "rmm2": {"target_modules": qv, "layers_to_transform": None},
        "odd2": {"target_modules": [names[0], names[3]], "layers_to_transform": None},
    }
    for name, fields in expect.items():
        _exports_exactly(home, base, tmp_path / f"out-{name}", name, fields)


def _exports_exactly(home, base, out, name: str, fields: dict) -> None:
    """``name`` exports with config ``fields`` and loads in PEFT with exactly its stored LoRA
    modules and no missing-key warning."""
    import warnings

    assert cli(home, "export", name, out).code == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert {k: config.get(k) for k in fields} == fields, name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), out)
    keys = load_file(out / "adapter_model.safetensors")
    stored = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in keys}
    assert {m.removeprefix("base_model.model.") for m in _lora_modules(loaded)} == stored, name
    assert not [w for w in caught if "missing adapter keys" in str(w.message)], name
