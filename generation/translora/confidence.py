"""Teacher-confidence filter (our addition to Trans-LoRA; ``teacher_filter='confidence'``).

The discriminator keeps inputs that *look* like the task's. It cannot tell whether the teacher
(source base + adapter) can answer them: an adapter trained on a closed vocabulary garbles words
it never saw, and the student then learns the garbling. Measured on the zoo's ``uppercase``
(77-word vocabulary; the generator invents words): the teacher's greedy answers to 40 real eval
inputs are all correct with a mean answer-token NLL of 0.008-0.059 nats, while on synthetic
inputs it writes ``river sweetheart spring`` -> ``RIVER STURD SEEDPUBLIC`` at 0.55 and ``book
finsterberg`` -> ``BOK FINSERADbergers`` at 3.0; every garbled label there scored >= 0.23.

So each candidate the discriminator kept is labelled by the teacher at once, and kept only if
the teacher's *worst-token* NLL on its own greedy answer (the least sure step) is within
``margin`` times what it shows on real inputs: the threshold is ``max(margin * q95, floor)``,
with ``q95`` the 95th percentile of that NLL over up to ``calibration`` real train-split inputs
(the eval split is never read). Not the mean, where one unsure step is diluted by the sure
ones: with a mean-NLL threshold the ``uppercase`` benchmark run (benchmarks/transfer.py, reduced
CPU recipe) kept labels like ``dwarf city mountains`` -> ``DWARF CITY MOUNTAIN`` and the student
scored 0.167; with the worst token, 0.300. Some one-token errors still pass (the threshold there
is 0.40, since the teacher's least sure step on real inputs reaches ~0.2).

The labels are reused by the distillation stage, so the filter costs one forced forward pass
per candidate on top of the labelling the pipeline does anyway, plus the rejected candidates'
labelling. This is pseudo-label confidence thresholding from self-training, applied to the
teacher; the recipe records the threshold and the counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from generation.apply import AdapterLike
from generation.base_models import LoadedBase
from generation.forced_eval import score_answers
from generation.tasks import Task
from generation.translora.distill import teacher_labels

FLOOR_NLL = 0.05  # nats/token: a threshold below this would reject near-certain answers


def threshold_from(real_nll: Sequence[float], margin: float, floor: float = FLOOR_NLL) -> float:
    """``max(margin * q95(real_nll), floor)`` over the finite values (empty answers are inf)."""
    finite = sorted(x for x in real_nll if math.isfinite(x))
    if not finite:
        return floor
    q95 = finite[min(len(finite) - 1, math.ceil(0.95 * len(finite)) - 1)]
    return max(margin * q95, floor)


@dataclass
class TeacherFilter:
    """Labels candidates with the teacher and keeps the confident ones (see the module doc).
    ``labels`` holds every answer it computed, so the distillation stage reuses them."""

    teacher: LoadedBase
    adapter: AdapterLike
    task: Task
    batch: int
    max_nll: float = math.inf
    labels: dict[str, str] = field(default_factory=dict)
    nll: dict[str, float] = field(default_factory=dict)

    def score(self, inputs: Sequence[str]) -> list[float]:
        """Label ``inputs`` (cached) and return the teacher's worst-token NLL on each own answer
        (``inf`` for an empty answer)."""
        todo = [x for x in dict.fromkeys(inputs) if x not in self.labels]
        if todo:
            answers = teacher_labels(
                self.teacher, self.adapter, self.task, todo, batch_size=self.batch
            )
            pairs = list(zip(todo, answers, strict=True))
            scored = score_answers(
                self.teacher, self.adapter, self.task, pairs, batch_size=self.batch
            )
            for (x, y), sc in zip(pairs, scored, strict=True):
                self.labels[x], self.nll[x] = y, sc.worst_nll
        return [self.nll[x] for x in inputs]

    def calibrate(self, real: Sequence[str], margin: float) -> dict[str, Any]:
        real_nll = self.score(real)
        self.max_nll = threshold_from(real_nll, margin)
        finite = sorted(x for x in real_nll if math.isfinite(x))
        return {
            "calibration_inputs": len(real),
            "real_nll_median": round(finite[len(finite) // 2], 4) if finite else None,
            "real_nll_max": round(finite[-1], 4) if finite else None,
            "margin": margin,
            "max_nll": round(self.max_nll, 4),
        }

    def __call__(self, inputs: Sequence[str]) -> list[bool]:
        return [nll <= self.max_nll for nll in self.score(inputs)]
