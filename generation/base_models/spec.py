"""What loradex needs to know about one base model: where its GGUF comes from and the token ids
the zoo protocol relies on (padding, stop ids, the id that ends a training answer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BaseModelSpec:
    name: str
    hf_id: str
    architecture: str
    # Returns the GGUF path; may build it under ``cache_dir`` (Gemma assembles its parts there).
    locate_gguf: Callable[[Path], Path]
    expected_sha256: str | None
    pad_token_id: int
    stop_token_ids: tuple[int, ...]
    # Appended to every training answer (the zoo used id 1, see shared/zoo/README.md).
    answer_end_id: int
    # Whether prompts start with the tokenizer's BOS; the zoo protocol uses none for SmolLM2.
    add_bos: bool
    install_hint: str
    summary: str
