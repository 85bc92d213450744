"""Import a stand-alone script (a benchmark, a corpus generator) by path, to test its helpers.

Scripts under ``benchmarks/`` are not a package, and ``benchmarks/retrieval.py`` would shadow
the ``retrieval`` package if its folder went on ``sys.path``; loading by path avoids both.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
