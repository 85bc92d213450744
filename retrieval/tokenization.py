"""The text model's tokenizer, straight from its ``tokenizer.json`` (the Rust ``tokenizers``
library: a few ms to import, where ``transformers.AutoTokenizer`` costs ~0.5 s of every
`loradex search` start), set up as sentence-transformers runs it: cut at the model's token
limit, padded to the longest text of the batch. ``tests/test_retrieval_embedders.py`` checks
the ids against ``AutoTokenizer`` and the vectors against sentence-transformers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import StorageError

FIELDS = ("input_ids", "attention_mask", "token_type_ids")


class FastTokenizer:
    def __init__(self, model_dir: Path, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise StorageError(f"no tokenizer.json under {model_dir}", code="embedder_unavailable")
        self._tok = Tokenizer.from_file(str(path))
        self._tok.enable_truncation(max_tokens)
        # The file may fix a padding length (MiniLM's says 128): pad to the batch instead.
        padding = self._tok.padding or _pad_from_special_tokens(Path(model_dir), self._tok)
        self._tok.enable_padding(
            pad_id=padding["pad_id"],
            pad_token=padding["pad_token"],
            pad_type_id=padding.get("pad_type_id", 0),
        )

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """(batch, tokens) int64 arrays: ``input_ids``, ``attention_mask``, ``token_type_ids``."""
        encodings = self._tok.encode_batch(list(texts))
        columns = (
            [e.ids for e in encodings],
            [e.attention_mask for e in encodings],
            [e.type_ids for e in encodings],
        )
        return {
            name: np.asarray(col, dtype=np.int64) for name, col in zip(FIELDS, columns, strict=True)
        }


def _pad_from_special_tokens(model_dir: Path, tok: Any) -> dict[str, Any]:
    special = model_dir / "special_tokens_map.json"
    pad = json.loads(special.read_text()).get("pad_token") if special.is_file() else None
    if isinstance(pad, dict):
        pad = pad.get("content")
    if not pad or tok.token_to_id(pad) is None:
        raise StorageError(
            f"{model_dir}: the tokenizer names no padding token", code="embedder_unavailable"
        )
    return {"pad_id": tok.token_to_id(pad), "pad_token": pad}
