"""The fusion rules that benchmarks/retrieval_fusion.py compares (hybrid, z-score, RRF)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.script_loader import ROOT, load_script


@pytest.fixture(scope="module")
def fusion():
    return load_script(ROOT / "benchmarks" / "retrieval_fusion.py", "retrieval_fusion_bench")


def test_rank_is_one_based_per_row(fusion):
    s = np.array([[0.1, 0.9, 0.5], [3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(fusion._rank(s), [[3, 1, 2], [1, 2, 3]])


def test_z_score_ignores_each_signals_scale_and_offset(fusion):
    """A signal whose cosines sit in a narrow band counts as much as a wide one."""
    rng = np.random.default_rng(0)
    t, w = rng.random((4, 6)), rng.random((4, 6))
    zsum = fusion.RULES["z-score sum"]
    np.testing.assert_allclose(zsum(t, w), zsum(t, 0.01 * w + 0.7), atol=1e-6)
    hybrid = fusion.RULES["hybrid 0.5/0.5"]
    assert not np.allclose(
        np.argsort(-hybrid(t, w), 1), np.argsort(-hybrid(t, 0.01 * w + 0.7), 1)
    ), "the cosine sum should be scale-sensitive (that is what the z-score row tests)"


def test_rrf_rewards_agreement_over_one_strong_signal(fusion):
    # candidate 0: 2nd in both lists; candidate 1: 1st in text, last in weights
    t = np.array([[0.8, 0.9, 0.1, 0.0]])
    w = np.array([[0.8, 0.0, 0.9, 0.1]])
    scores = fusion.RULES["RRF (60)"](t, w)
    assert scores[0, 0] > scores[0, 1]
    assert scores[0, 0] == pytest.approx(2 / 62)


def test_the_rank_of_the_own_column_is_what_the_table_counts(fusion):
    """score() ranks task i's own adapter among all candidates (ties count against it)."""
    s = np.array([[0.9, 0.1, 0.2], [0.5, 0.5, 0.0], [0.3, 0.8, 0.1]])
    ranks = fusion.bench.ranks_of(np.eye(3), s, np.arange(3))
    np.testing.assert_array_equal(ranks, [1, 2, 3])
