"""The one seed range: every interface (CLI, REST's JSON schemas, job specs) accepts the same
seeds, so a recipe's seed always replays through any of them."""

from __future__ import annotations

from hub.core.errors import BadInputError

MAX_SEED = 2**31 - 1  # JSON-schema friendly and within every RNG's range (torch, numpy, random)


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BadInputError(f"seed must be 0..{MAX_SEED}, got {seed!r}", code="seed_out_of_range")
