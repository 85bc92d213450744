"""Rejection sampling of synthetic inputs (ALGORITHMS.md 6.2 step 5), with the cap the paper's
loop lacks.

Each round asks the generator for candidates, drops repeats (of seeds and of every earlier
candidate, kept or not, so a rejected input is never judged twice), asks the judge for
(p_yes, p_no) and keeps a candidate iff p_yes > p_no (a tie is a rejection). The loop ends when
``target`` inputs are kept or after ``max_rounds`` rounds, whichever comes first. Without a
judge every new candidate is kept (the unfiltered ablation / fallback). ``confident`` (the
teacher-confidence filter, ``confidence.py``) then sees what the judge accepted and may drop
more; what it drops counts in ``unconfident``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from generation.translora.synthesis import keep_new

Generate = Callable[[int], list[str]]  # round index (0-based) -> parsed candidates
Judge = Callable[[Sequence[str]], list[tuple[float, float]]]  # inputs -> (p_yes, p_no) each
Confident = Callable[[Sequence[str]], list[bool]]  # inputs -> keep each
OnRound = Callable[["FilterStats"], None]


@dataclass
class FilterStats:
    target: int
    max_rounds: int
    rounds: int = 0
    generated: int = 0  # parsed items, repeats included
    new: int = 0  # after dropping seeds and repeats
    judged: int = 0
    accepted: int = 0  # judged real (may exceed what is kept in the last round)
    rejected: int = 0
    ties: int = 0  # p_yes == p_no: rejected
    unconfident: int = 0  # accepted by the judge, dropped by the teacher-confidence filter
    kept: int = 0
    stopped: str = "running"  # "target" | "max_rounds"
    sum_p_yes_accepted: float = 0.0
    sum_p_yes_rejected: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for key, count in (("accepted", self.accepted), ("rejected", self.rejected)):
            total = doc.pop(f"sum_p_yes_{key}")
            doc[f"mean_p_yes_{key}"] = round(total / count, 4) if count else None
        doc["acceptance_rate"] = round(self.accepted / self.judged, 4) if self.judged else None
        return doc


def keep_iff_more_likely_real(p_yes: float, p_no: float) -> bool:
    """The paper's rule: keep x iff p("yes" | t(x)) > p("no" | t(x)); ties are rejected."""
    return p_yes > p_no


def rejection_sample(
    generate: Generate,
    judge: Judge | None,
    *,
    target: int,
    max_rounds: int,
    seen: set[str],
    on_round: OnRound | None = None,
    confident: Confident | None = None,
) -> tuple[list[str], FilterStats]:
    """Kept inputs (at most ``target``, in the order found) and the loop's statistics."""
    if target < 1 or max_rounds < 1:
        raise ValueError("target and max_rounds must be >= 1")
    stats = FilterStats(target=target, max_rounds=max_rounds)
    kept: list[str] = []
    while len(kept) < target and stats.rounds < max_rounds:
        raw = generate(stats.rounds)
        stats.rounds += 1
        fresh = keep_new(raw, seen)
        stats.generated += len(raw)
        stats.new += len(fresh)
        accepted = _judge(fresh, judge, stats) if judge is not None else fresh
        if confident is not None and accepted:
            keep = confident(accepted)
            stats.unconfident += keep.count(False)
            accepted = [x for x, ok in zip(accepted, keep, strict=True) if ok]
        kept += accepted[: target - len(kept)]
        stats.kept = len(kept)
        if on_round is not None:
            on_round(stats)
    stats.stopped = "target" if len(kept) >= target else "max_rounds"
    return kept, stats


def _judge(fresh: list[str], judge: Judge, stats: FilterStats) -> list[str]:
    if not fresh:
        return []
    scores = judge(fresh)
    if len(scores) != len(fresh):
        raise ValueError(f"the judge scored {len(scores)} of {len(fresh)} inputs")
    accepted = []
    for item, (p_yes, p_no) in zip(fresh, scores, strict=True):
        stats.judged += 1
        stats.ties += p_yes == p_no
        if keep_iff_more_likely_real(p_yes, p_no):
            accepted.append(item)
            stats.accepted += 1
            stats.sum_p_yes_accepted += p_yes
        else:
            stats.rejected += 1
            stats.sum_p_yes_rejected += p_yes
    return accepted
