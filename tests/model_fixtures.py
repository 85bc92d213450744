"""Session-wide cache of converted base models, shared by every slow test (converting SmolLM2
once costs ~30 s). ``LORADEX_TEST_MODEL_CACHE=DIR`` keeps it across runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    env = os.environ.get("LORADEX_TEST_MODEL_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("models")
