"""Every file of the committed bad corpus (tests/corpus/bad) is rejected with its exact code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.core.errors import (
    ADAPTER_CODES,
    SAFETENSORS_CODES,
    HubError,
    InvalidAdapterError,
    PickleRefusedError,
)
from storage.peft_format import read_peft_dir
from storage.safetensors_io import check_finite, parse_safetensors
from tests.script_loader import load_script

CORPUS = Path(__file__).parent / "corpus"
BAD = CORPUS / "bad"
ENTRIES: dict[str, dict[str, str]] = json.loads((BAD / "manifest.json").read_text())["entries"]


def _validate(path: Path) -> None:
    if path.is_dir():
        read_peft_dir(path)
    else:
        check_finite(parse_safetensors(path.read_bytes()).tensors)


@pytest.mark.parametrize("rel", sorted(ENTRIES))
def test_bad_file_is_rejected_with_its_code(rel: str) -> None:
    expected = ENTRIES[rel]["code"]
    with pytest.raises(HubError) as info:
        _validate(BAD / rel)
    assert isinstance(info.value, InvalidAdapterError)
    assert info.value.code == expected, info.value.message
    assert info.value.kind == "bad_input"
    if expected == "pickle_refused":
        assert isinstance(info.value, PickleRefusedError)


def test_corpus_is_big_small_and_covers_every_class() -> None:
    assert len(ENTRIES) >= 45
    codes = {spec["code"] for spec in ENTRIES.values()}
    assert set(SAFETENSORS_CODES) <= codes
    assert codes <= set(SAFETENSORS_CODES) | set(ADAPTER_CODES)
    for code in (
        "weights_not_finite",
        "lora_unpaired",
        "lora_rank_mismatch",
        "adapter_empty",
        "config_invalid",
        "config_missing",
        "target_modules_unmatched",
        "unknown_tensor",
        "unsupported_peft_type",
        "pickle_refused",
    ):
        assert code in codes
    on_disk = {p.relative_to(BAD).as_posix() for p in (BAD / "files").iterdir()}
    on_disk |= {p.relative_to(BAD).as_posix() for p in (BAD / "dirs").iterdir()}
    assert on_disk == set(ENTRIES)
    total = sum(p.stat().st_size for p in BAD.rglob("*") if p.is_file())
    assert total < 2_000_000


def test_corpus_matches_its_generator(tmp_path: Path) -> None:
    module = load_script(CORPUS / "make_bad_corpus.py", "make_bad_corpus")
    module.build(tmp_path / "bad")
    fresh = {
        p.relative_to(tmp_path / "bad"): p.read_bytes()
        for p in (tmp_path / "bad").rglob("*")
        if p.is_file()
    }
    committed = {p.relative_to(BAD): p.read_bytes() for p in BAD.rglob("*") if p.is_file()}
    assert fresh.keys() == committed.keys()
    changed = sorted(str(k) for k in fresh if fresh[k] != committed[k])
    assert not changed, f"regenerate the corpus: {changed}"
