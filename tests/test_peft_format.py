"""storage/peft_format.py against real PEFT: exact round trips on a tiny Llama, delta parity,
non-mergeable adapters recorded faithfully, the 49 zoo adapters, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import peft  # noqa: E402
import pytest
import torch
import transformers  # noqa: E402
from peft.tuners.tuners_utils import check_target_module_exists  # noqa: E402
from peft.utils.other import get_pattern_key as peft_get_pattern_key  # noqa: E402

from hub.core.errors import ConflictError, InvalidAdapterError, PickleRefusedError
from storage.peft_config import get_pattern_key, lora_settings, peft_config_for, target_matches
from storage.peft_format import read_peft_bytes, read_peft_dir, write_peft_dir
from storage.safetensors_io import parse_safetensors, serialize_safetensors
from tests.factories import tiny_llama  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "shared" / "zoo"
if not ZOO.exists():
    ZOO = Path("/work/shared/zoo")
INPUT_IDS = torch.tensor([[1, 5, 9, 17, 33, 65, 100, 127]])


def tiny_base(attention_bias: bool = False) -> transformers.LlamaForCausalLM:
    return tiny_llama(attention_bias=attention_bias)


def trained_peft(attention_bias: bool = False, **lora_kwargs: Any) -> peft.PeftModel:
    """A PEFT model whose adapter tensors (incl. lora_B, normally zero-initialised) are random,
    so a round trip that loses anything changes the logits."""
    model = peft.get_peft_model(tiny_base(attention_bias), peft.LoraConfig(**lora_kwargs))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3 + 0.05)
    return model.eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT_IDS).logits


def reload_logits(path: Path, attention_bias: bool = False) -> torch.Tensor:
    return logits(peft.PeftModel.from_pretrained(tiny_base(attention_bias), path).eval())


def saved(model: peft.PeftModel, tmp_path: Path) -> Path:
    out = tmp_path / "peft_saved"
    model.save_pretrained(out)
    return out


PARITY_CASES = {
    "plain": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "patterns_rslora": dict(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "o_proj"],
        rank_pattern={"v_proj": 2, r"layers\.1\.self_attn\.q_proj": 6},
        alpha_pattern={"o_proj": 3, "layers.0.self_attn.v_proj": 5},
        use_rslora=True,
    ),
    "regex_targets": dict(r=3, lora_alpha=7, target_modules=r".*\.(q_proj|up_proj)"),
}


# ---------------------------------------------------------------- PEFT parity


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_round_trip_reproduces_peft_logits_exactly(case: str, tmp_path: Path) -> None:
    model = trained_peft(**PARITY_CASES[case])
    expected = logits(model)
    parsed = read_peft_dir(saved(model, tmp_path))
    assert parsed.adapter.mergeable and parsed.dtype == "F32"
    assert parsed.architecture == "LlamaForCausalLM"

    write_peft_dir(parsed.adapter, parsed.config, tmp_path / "verbatim",
                   weights_bytes=parsed.weights_bytes)  # fmt: skip
    write_peft_dir(parsed.adapter, parsed.config, tmp_path / "reserialized")
    fresh_config = peft_config_for(parsed.adapter, base_model_name_or_path="tiny")
    write_peft_dir(parsed.adapter, fresh_config, tmp_path / "fresh_config")
    for name in ("verbatim", "reserialized", "fresh_config"):
        assert torch.equal(reload_logits(tmp_path / name), expected), name


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_delta_and_ranks_match_peft_layers(case: str, tmp_path: Path) -> None:
    model = trained_peft(**PARITY_CASES[case])
    adapter = read_peft_dir(saved(model, tmp_path)).adapter
    layers = {
        name.removeprefix("base_model.model."): module
        for name, module in model.named_modules()
        if isinstance(module, peft.tuners.lora.LoraLayer)
    }
    assert set(layers) == set(adapter.modules)
    for name, layer in layers.items():
        module = adapter.modules[name]
        assert module.rank == layer.r["default"]
        assert module.scaling == pytest.approx(layer.scaling["default"], rel=1e-12)
        expected = layer.get_delta_weight("default").detach().double().numpy()
        np.testing.assert_allclose(module.delta(), expected, rtol=1e-5, atol=1e-6)


def test_pattern_key_matches_peft() -> None:
    patterns = ["v_proj", r"layers\.1\.self_attn\.q_proj", "layers.0.self_attn.v_proj", "proj"]
    names = [f"model.layers.{i}.self_attn.{p}" for i in (0, 1, 11) for p in ("q_proj", "v_proj")]
    names += ["model.layers.1.mlp.up_proj", "lm_head", "xv_proj"]
    for name in names:
        assert get_pattern_key(patterns, name) == peft_get_pattern_key(patterns, name)


@pytest.mark.parametrize(
    "targets", [["q_proj", "v_proj"], ["self_attn.q_proj"], r".*\.q_proj", "q_proj", ["proj"]]
)
def test_target_matching_matches_peft(targets: Any) -> None:
    config = peft.LoraConfig(target_modules=targets)
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "q_proj",
             "model.layers.0.mlp.up_proj", "model.layers.0.self_attn.xq_proj"]  # fmt: skip
    for name in names:
        assert target_matches(targets, name) == bool(check_target_module_exists(config, name))


# ---------------------------------------------------------------- non-mergeable adapters

NON_MERGEABLE = {
    "dora": (dict(use_dora=True), False, "DoRA"),
    "lora_bias": (dict(lora_bias=True), False, "bias"),
    "bias_all": (dict(bias="all"), True, "bias"),
    "modules_to_save": (dict(modules_to_save=["lm_head"]), False, "modules_to_save"),
    "embedding": (dict(target_modules=["q_proj", "embed_tokens"]), False, "embedding"),
    "trainable_tokens": (dict(trainable_token_indices=[1, 2, 3]), False, "token"),
}


@pytest.mark.parametrize("case", sorted(NON_MERGEABLE))
def test_non_mergeable_adapters_are_recorded_faithfully(case: str, tmp_path: Path) -> None:
    extra, attention_bias, word = NON_MERGEABLE[case]
    kwargs = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) | extra
    model = trained_peft(attention_bias=attention_bias, **kwargs)
    expected = logits(model)
    parsed = read_peft_dir(saved(model, tmp_path))
    adapter = parsed.adapter
    assert adapter.mergeable is False
    assert word.lower() in adapter.not_mergeable_reason.lower()
    assert adapter.not_mergeable_reason.endswith(".")
    assert adapter.extra_tensors
    write_peft_dir(adapter, parsed.config, tmp_path / "reserialized")
    write_peft_dir(adapter, parsed.config, tmp_path / "verbatim",
                   weights_bytes=parsed.weights_bytes)  # fmt: skip
    for name in ("reserialized", "verbatim"):
        assert torch.equal(reload_logits(tmp_path / name, attention_bias), expected), name
    again = read_peft_dir(tmp_path / "reserialized").adapter
    assert again.extra_tensors.keys() == adapter.extra_tensors.keys()


def test_dora_reason_is_the_documented_sentence(tmp_path: Path) -> None:
    model = trained_peft(r=2, target_modules=["q_proj"], use_dora=True)
    reason = read_peft_dir(saved(model, tmp_path)).adapter.not_mergeable_reason
    assert reason.startswith("DoRA adapter: magnitude vectors make the update non-linear")


# ---------------------------------------------------------------- the zoo


@pytest.mark.skipif(not (ZOO / "manifest.json").exists(), reason="zoo not available")
def test_reads_all_zoo_adapters() -> None:
    manifest = json.loads((ZOO / "manifest.json").read_text())
    assert len(manifest["adapters"]) == 49
    for record in manifest["adapters"]:
        parsed = read_peft_dir(ZOO / record["adapter"])
        adapter = parsed.adapter
        assert set(adapter.ranks.values()) == {record["rank"]}, record["task"]
        assert len(adapter.modules) == 60 and adapter.mergeable
        assert adapter.target_modules == sorted(record["target_modules"])
        assert {m.alpha for m in adapter.modules.values()} == {record["lora_alpha"]}
        assert adapter.base.model_id == manifest["base_model"]["id"]
        assert parsed.dtype == "F16"
        assert adapter.shapes()["model.layers.29.self_attn.v_proj"] == (576, 192)


# ---------------------------------------------------------------- details


def _tiny_tensors(key_infix: str = "") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    base = "base_model.model.model.layers.0.self_attn.q_proj"
    return {
        f"{base}.lora_A{key_infix}.weight": rng.standard_normal((2, 8)).astype(np.float32),
        f"{base}.lora_B{key_infix}.weight": rng.standard_normal((8, 2)).astype(np.float32),
    }


CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}


def test_adapter_name_in_keys_is_stripped() -> None:
    parsed = read_peft_bytes(json.dumps(CONFIG).encode(),
                             serialize_safetensors(_tiny_tensors(".default")))  # fmt: skip
    assert list(parsed.adapter.modules) == ["model.layers.0.self_attn.q_proj"]
    assert parsed.adapter.modules["model.layers.0.self_attn.q_proj"].scaling == 2.0


def test_bf16_weights_are_widened(tmp_path: Path) -> None:
    weights = serialize_safetensors(_tiny_tensors(), dtypes=dict.fromkeys(_tiny_tensors(), "BF16"))
    parsed = read_peft_bytes(json.dumps(CONFIG).encode(), weights)
    assert parsed.dtype == "BF16"
    module = parsed.adapter.modules["model.layers.0.self_attn.q_proj"]
    assert module.A.dtype == np.float32


def test_peft_config_for_uses_common_rank_and_full_name_patterns(tmp_path: Path) -> None:
    model = trained_peft(**PARITY_CASES["patterns_rslora"])
    adapter = read_peft_dir(saved(model, tmp_path)).adapter
    config = peft_config_for(adapter, base_model_name_or_path="base/x", template={"foo": 1})
    # ranks 4 x3, 2 x2, 6 x1 -> r=4; among rank-4 modules alpha 3 (o_proj x2) beats 8 (q_proj)
    assert config["r"] == 4 and config["lora_alpha"] == 3 and config["use_rslora"] is True
    assert config["rank_pattern"] == {
        "model.layers.0.self_attn.v_proj": 2,
        "model.layers.1.self_attn.q_proj": 6,
        "model.layers.1.self_attn.v_proj": 2,
    }
    settings = lora_settings(config)
    for name, module in adapter.modules.items():
        assert settings.rank_for(name) == module.rank
        assert settings.alpha_for(name) == module.alpha
    # no base module list: only full names are exact; with one, the leaf names that select
    # exactly the stored modules of the base
    assert config["target_modules"] == sorted(adapter.modules)
    with_base = peft_config_for(
        adapter, base_model_name_or_path="base/x", base_modules=set(adapter.modules)
    )
    assert with_base["target_modules"] == ["o_proj", "q_proj", "v_proj"]
    assert (config["peft_type"], config["task_type"], config["bias"]) == (
        "LORA",
        "CAUSAL_LM",
        "none",
    )
    assert config["use_dora"] is False and config["foo"] == 1
    assert config["base_model_name_or_path"] == "base/x"
    peft.LoraConfig(**{k: v for k, v in config.items() if k not in ("peft_type", "foo")})


def test_write_refuses_non_empty_target_and_fills_empty_one(tmp_path: Path) -> None:
    parsed = read_peft_bytes(json.dumps(CONFIG).encode(), serialize_safetensors(_tiny_tensors()))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(ConflictError):
        write_peft_dir(parsed.adapter, parsed.config, tmp_path / "busy")
    (tmp_path / "empty").mkdir()
    write_peft_dir(parsed.adapter, parsed.config, tmp_path / "empty")
    assert read_peft_dir(tmp_path / "empty").weights_bytes == parsed.weights_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]  # no temp leftovers


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    parsed = read_peft_bytes(json.dumps(CONFIG).encode(), serialize_safetensors(_tiny_tensors()))

    def broken_rename(*_args: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(Exception, match="appeared|disk on fire"):
        write_peft_dir(parsed.adapter, parsed.config, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_invalid_verbatim_bytes(tmp_path: Path) -> None:
    parsed = read_peft_bytes(json.dumps(CONFIG).encode(), serialize_safetensors(_tiny_tensors()))
    with pytest.raises(InvalidAdapterError):
        write_peft_dir(parsed.adapter, parsed.config, tmp_path / "o", weights_bytes=b"junk")
    assert not (tmp_path / "o").exists()


def test_pickle_only_dir_message_says_how_to_convert(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(PickleRefusedError) as info:
        read_peft_dir(tmp_path)
    assert "safetensors.torch.save_file" in info.value.message


def test_missing_dir_and_fifo_weights(tmp_path: Path) -> None:
    with pytest.raises(InvalidAdapterError) as info:
        read_peft_dir(tmp_path / "nope")
    assert info.value.code == "config_missing"
    (tmp_path / "adapter_config.json").write_text(json.dumps(CONFIG))
    os.mkfifo(tmp_path / "adapter_model.safetensors")  # must not block the reader
    with pytest.raises(InvalidAdapterError) as info:
        read_peft_dir(tmp_path)
    assert info.value.code == "weights_invalid"


def test_parsed_tensors_keep_safetensors_dtype_and_are_read_only() -> None:
    weights = serialize_safetensors({k: v.astype(np.float16) for k, v in _tiny_tensors().items()})
    parsed = read_peft_bytes(json.dumps(CONFIG).encode(), weights)
    module = parsed.adapter.modules["model.layers.0.self_attn.q_proj"]
    assert module.A.dtype == np.float16 and not module.A.flags.writeable
    assert parse_safetensors(parsed.weights_bytes).dtypes


@pytest.mark.parametrize(
    "pattern", ["(a+)+$", "(a|aa)*c", ".*.*.*x", "(.*a){20}", "x" * 300, "(unclosed"]
)
def test_backtracking_prone_regexes_are_refused(pattern: str) -> None:
    for config in (dict(CONFIG, target_modules=pattern), dict(CONFIG, rank_pattern={pattern: 2})):
        with pytest.raises(InvalidAdapterError) as info:
            read_peft_bytes(json.dumps(config).encode(), serialize_safetensors(_tiny_tensors()))
        assert info.value.code == "config_invalid"


def test_long_module_names_are_refused() -> None:
    tensors = {k.replace("q_proj", "q" * 300 + "_proj"): v for k, v in _tiny_tensors().items()}
    with pytest.raises(InvalidAdapterError) as info:
        read_peft_bytes(json.dumps(CONFIG).encode(), serialize_safetensors(tensors))
    assert info.value.code == "unknown_tensor"


def test_factor_shapes_reads_modules_from_key_shapes_alone():
    """What a safetensors header gives (name -> shape) is enough for a shape check: lora_A is
    (r, d_in), lora_B is (d_out, r), PEFT's adapter-name infix is allowed, and whatever the
    full validation must judge (a lone factor, a 1-D factor, other tensors) is left out."""
    from storage.peft_keys import factor_shapes

    p = "base_model.model.model.layers.0."
    shapes = {
        f"{p}self_attn.q_proj.lora_A.weight": [8, 64],
        f"{p}self_attn.q_proj.lora_B.weight": [32, 8],
        f"{p}self_attn.v_proj.lora_A.default.weight": [4, 64],
        f"{p}self_attn.v_proj.lora_B.default.weight": [16, 4],
        f"{p}mlp.up_proj.lora_A.weight": [4, 64],  # no lora_B
        f"{p}mlp.down_proj.lora_A.weight": [4],  # not 2-D
        f"{p}mlp.down_proj.lora_B.weight": [64, 4],
        f"{p}self_attn.k_proj.lora_magnitude_vector": [16],
        "model.layers.0.self_attn.o_proj.lora_A.weight": [4, 64],  # no PEFT prefix
    }
    assert factor_shapes(shapes) == {
        "model.layers.0.self_attn.q_proj": (64, 32),
        "model.layers.0.self_attn.v_proj": (64, 16),
    }
