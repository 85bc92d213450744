"""End to end through the catalog: an adapter saved by PEFT, registered with `loradex add` and
exported with `loradex export`, loads with `PeftModel.from_pretrained` with identical logits."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

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
