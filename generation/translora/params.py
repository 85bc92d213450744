"""The Trans-LoRA recipe as one typed, validated model (no torch: the REST schema uses it).

Defaults are the full recipe: the paper's sizes (5 seeds, 250 kept synthetic inputs, a header
that claims 10 examples) with the zoo's LoRA recipe for the small models used here (lr 1e-3,
20 warm-up steps then linear decay, batch 32, 200 steps; rank = the source adapter's).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from hub.core.json_input import JsonBody
from hub.core.seeds import MAX_SEED

FilterMode = Literal["discriminator", "none"]
TeacherFilterMode = Literal["confidence", "none"]


class TransferParams(JsonBody):
    model_config = ConfigDict(extra="forbid")

    # -- seeds and synthesis ----------------------------------------------------------------
    seeds: int = Field(default=5, ge=2, le=64, description="Seed examples from the task file.")
    synthetic: int = Field(
        default=250, ge=1, le=100_000, description="Synthetic inputs to keep (the paper's |D|)."
    )
    header_count: int = Field(
        default=10, ge=3, le=200, description="How many examples the list prompt claims."
    )
    temperature: float = Field(
        default=1.0, allow_inf_nan=False, gt=0.0, le=5.0, description="Generator sampling."
    )
    top_p: float = Field(
        default=0.95, allow_inf_nan=False, gt=0.0, le=1.0, description="Generator nucleus sampling."
    )
    gen_batch: int = Field(default=16, ge=1, le=1024, description="Prompts per generator round.")
    max_rounds: int = Field(
        default=200, ge=1, le=100_000, description="Cap on generator rounds (the paper has none)."
    )
    max_input_chars: int = Field(
        default=0, ge=0, description="Longest accepted synthetic input; 0: 2 x the longest seed."
    )
    # -- discriminator ------------------------------------------------------------------------
    filter: FilterMode = Field(
        default="discriminator",
        description="`discriminator`: keep what it judges real; `none`: keep every new input.",
    )
    disc_real: int = Field(
        default=250, ge=2, le=100_000, description="Real task inputs the discriminator sees."
    )
    disc_rank: int = Field(default=8, ge=1, le=256)
    disc_steps: int = Field(default=100, ge=1, le=100_000)
    disc_batch: int = Field(default=16, ge=1, le=1024)
    disc_lr: float = Field(default=1e-3, allow_inf_nan=False, gt=0.0, le=1.0)
    # -- teacher and student ------------------------------------------------------------------
    teacher_batch: int = Field(default=32, ge=1, le=1024)
    teacher_filter: TeacherFilterMode = Field(
        default="confidence",
        description="`confidence` (our addition): keep an input only if the teacher's worst-token "
        "NLL on its own answer is within `teacher_margin` x its 95th percentile on real inputs.",
    )
    teacher_margin: float = Field(default=2.0, allow_inf_nan=False, gt=0.0, le=1000.0)
    teacher_calibration: int = Field(
        default=64, ge=2, le=100_000, description="Real train inputs that set the threshold."
    )
    rank: int | None = Field(default=None, ge=1, le=1024, description="Student rank.")
    steps: int = Field(default=200, ge=1, le=1_000_000, description="Student training steps.")
    batch: int = Field(default=32, ge=1, le=1024, description="Student batch size.")
    lr: float = Field(
        default=1e-3, allow_inf_nan=False, gt=0.0, le=1.0, description="Student learning rate."
    )
    warmup: int = Field(default=20, ge=0, le=1_000_000)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _header_claims_more_than_it_shows(self) -> TransferParams:
        if self.header_count <= self.seeds:
            raise ValueError(
                f"header_count ({self.header_count}) must exceed seeds ({self.seeds}): the "
                "prompt claims more examples than it shows so the model continues the list"
            )
        return self
