"""Export of mixtures, and PEFT's X-LoRA (0.21.2, pinned in pyproject) as the reference:

- a token-routed mixture exports to a directory ``PeftModel.from_pretrained`` loads, and PEFT's
  XLoraModel then computes exactly our logits (same gate, same experts);
- known PEFT defects are guarded: its ``save_pretrained`` drops classifier layers whose index is
  an expert key ("0", "1": the keys PEFT 0.21.2 needs), so loradex writes the gate itself;
  ``disable_adapter`` must give the base model and experts must stay frozen (PEFT #3635);
- a prompt-routed mixture has no PEFT equivalent: no ``adapter_config.json``, PEFT refuses it.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from hub.core.names import AdapterRef
from hub.services.mixture import GateOptions
from storage.peft_format import read_peft_dir
from tests.mixture_helpers import base, register_experts, use_tiny_base, write_task

IDS = torch.tensor([[5, 9, 17, 33, 65, 12, 40], [7, 7, 100, 3, 41, 2, 90]])


@pytest.fixture
def mixed(monkeypatch, container, tmp_path):
    use_tiny_base(monkeypatch)
    labels = register_experts(container, ("first", "last"))
    tasks = [str(write_task(tmp_path, t)) for t in ("first", "last")]

    def make(name: str, **options):
        opts = GateOptions(steps=30, examples=4, lr=5e-2, **options)
        container.mixtures.mix([AdapterRef.parse(x) for x in labels], name=name, tasks=tasks,
                               options=opts)  # fmt: skip
        return container.registry.show(AdapterRef(name))

    return container, labels, make


def our_logits(container, detail):
    runtime = container.mixtures.runtime(detail, base())
    with torch.no_grad(), runtime.attach(base().model):
        return base().model(IDS).logits


@pytest.mark.parametrize("depth", [1, 2])
def test_token_routed_export_loads_in_peft_and_matches(mixed, tmp_path, depth):
    from peft import PeftModel

    container, labels, make = mixed
    detail = make("mx", routing="token", depth=depth, size=8, layerwise=True)
    out = container.registry.export(AdapterRef("mx"), tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == [
        "0", "1", "adapter_config.json", "adapter_model.safetensors", "loradex_mixture.json",
    ]  # fmt: skip
    for i, label in enumerate(labels):  # each expert: its own PEFT directory, byte for byte
        expert = container.registry.show(AdapterRef.parse(label))
        assert (out / str(i) / "adapter_model.safetensors").read_bytes() == (
            container.registry.blobs.get(expert.digest)
        )
        assert read_peft_dir(out / str(i)).adapter.ranks
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "XLORA" and list(config["adapters"]) == ["0", "1"]
    model = copy.deepcopy(base().model)
    model.config.use_cache = False
    peft_model = PeftModel.from_pretrained(model, str(out)).eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=IDS).logits
        plain = base().model(IDS).logits
        with peft_model.disable_adapter():  # PEFT #3635: must be the base model
            disabled = peft_model(input_ids=IDS).logits
    torch.testing.assert_close(theirs, our_logits(container, detail), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(theirs, plain)
    torch.testing.assert_close(disabled, plain, atol=1e-6, rtol=0)
    frozen = [n for n, p in peft_model.named_parameters() if ".lora_" in n and p.requires_grad]
    assert frozen == []  # experts stay frozen after forwards (PEFT #2015/#3635)
    scalings = peft_model.base_model.get_latest_scalings()
    assert scalings.shape == (2, 7, 4, 2)


def test_peft_save_pretrained_drops_gate_layers_so_loradex_writes_the_gate(mixed, tmp_path):
    """Why export never calls PEFT's save_pretrained: with experts keyed "0", "1" its adapter-name
    filter also removes ``layers.0``/``layers.1`` of the classifier (PEFT 0.21.2)."""
    import peft
    from peft import PeftModel
    from safetensors.torch import load_file

    container, _, make = mixed
    make("mx", routing="token", depth=2, size=8)
    out = container.registry.export(AdapterRef("mx"), tmp_path / "export")
    ours = set(load_file(str(out / "adapter_model.safetensors")))
    prefix = "base_model.internal_xlora_classifier.layers"
    assert ours == {f"{prefix}.{i}.{k}" for i in (0, 2) for k in ("weight", "bias")}
    model = copy.deepcopy(base().model)
    model.config.use_cache = False
    resaved = tmp_path / "peft-saved"
    PeftModel.from_pretrained(model, str(out)).save_pretrained(
        str(resaved), save_embedding_layers=False
    )
    theirs = set(load_file(str(resaved / "adapter_model.safetensors")))
    if peft.__version__ == "0.21.2":
        assert theirs == ours - {k for k in ours if ".layers.0." in k}  # the defect, pinned
    assert theirs <= ours


def test_prompt_routed_export_is_loradex_format_and_peft_refuses_it(mixed, tmp_path):
    from peft import PeftModel

    container, labels, make = mixed
    make("mx", routing="prompt")
    out = container.registry.export(AdapterRef("mx"), tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == [
        "0", "1", "adapter_model.safetensors", "loradex_mixture.json",
    ]  # fmt: skip
    doc = json.loads((out / "loradex_mixture.json").read_text())
    assert doc["format"] == "loradex.mixture/1" and doc["gate"]["routing"] == "prompt"
    assert [f"{e['name']}@{e['version']}" for e in doc["experts"]] == labels
    with pytest.raises(ValueError):
        PeftModel.from_pretrained(copy.deepcopy(base().model), str(out))
    with pytest.raises(Exception, match="not empty"):
        container.registry.export(AdapterRef("mx"), out)
