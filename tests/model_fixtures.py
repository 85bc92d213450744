"""Session-wide cache of converted base models, shared by every slow test (converting SmolLM2
once costs ~30 s). ``LORADEX_TEST_MODEL_CACHE=DIR`` keeps it across runs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# One ONNX export of the text model (~7 s) for the whole session, CLI subprocesses included,
# kept out of the user's ~/.cache; LORADEX_EMBEDDER_CACHE_DIR=DIR keeps it across runs.
if not os.environ.get("LORADEX_EMBEDDER_CACHE_DIR"):
    _onnx_cache = tempfile.mkdtemp(prefix="loradex-test-onnx-")
    os.environ["LORADEX_EMBEDDER_CACHE_DIR"] = _onnx_cache
    atexit.register(shutil.rmtree, _onnx_cache, ignore_errors=True)  # ~90 MB a run


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    env = os.environ.get("LORADEX_TEST_MODEL_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("models")
